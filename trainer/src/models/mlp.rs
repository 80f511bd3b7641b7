//! A multi-layer perceptron classifier: `Linear -> ReLU` blocks and a linear head.
//!
//! Under mixed precision the layers compute in the half type, weights cast
//! once per forward (f32 stays the master copy); the logits come out in it.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarMap};

use crate::data::Batch;
use crate::error::Result;
use crate::model::{Model, ModelOutput};
use crate::precision::Precision;

/// The shape of an [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Features per sample.
    pub input_dim: usize,
    /// Width of each hidden layer, in order.
    pub hidden: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
}

/// A classifier over real-valued features; labels are class indices.
pub struct Mlp {
    layers: Vec<Linear>,
    varmap: VarMap,
    precision: Precision,
}

impl Mlp {
    /// A new MLP with weights drawn from `seed`.
    pub fn new(config: &MlpConfig, seed: u64, device: &Device) -> Result<Self> {
        let (varmap, vb) = crate::init::seeded_var_builder(seed, DType::F32, device);
        let mut dims = vec![config.input_dim];
        dims.extend(&config.hidden);
        dims.push(config.num_classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, pair)| candle_nn::linear(pair[0], pair[1], vb.pp(format!("layers.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            varmap,
            precision: Precision::F32,
        })
    }

    /// Logits for a `(batch, input_dim)` tensor.
    pub fn logits(&self, inputs: &Tensor) -> Result<Tensor> {
        let dtype = self.precision.compute_dtype();
        let mut x = inputs.to_dtype(dtype)?;
        for (i, layer) in self.layers.iter().enumerate() {
            // A no-op in f32; else the weights' one cast of this forward.
            let weight = layer.weight().to_dtype(dtype)?;
            let bias = layer.bias().map(|b| b.to_dtype(dtype)).transpose()?;
            x = Linear::new(weight, bias).forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

impl Model for Mlp {
    fn forward(&self, batch: &Batch, _train: bool) -> Result<ModelOutput> {
        ModelOutput::with_cross_entropy(self.logits(&batch.inputs)?, batch.labels.as_ref())
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    fn floating_point_ops(&self, batch: &Batch) -> Option<f64> {
        Some(6.0 * batch.size as f64 * self.num_parameters() as f64)
    }
}
