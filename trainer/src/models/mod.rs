//! Built-in models for examples, tests and benchmarks: an MLP classifier and
//! a small decoder-only GPT, both from candle-nn pieces and seeded.

mod gpt;
mod mlp;

pub use gpt::{Gpt, GptConfig};
pub use mlp::{Mlp, MlpConfig};
