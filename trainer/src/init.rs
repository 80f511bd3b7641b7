//! Seeded parameter initialisation.
//!
//! candle's CPU random generator cannot be seeded (`Device::Cpu.set_seed`
//! fails), yet a run must start from the same weights every time for exact
//! resume and for tests that compare two runs. [`SeededVarMap`] is a
//! `VarBuilder` backend that creates every new parameter from a ChaCha stream
//! seeded once, honouring the `Init` each candle-nn layer asks for, and stores
//! it in a plain [`VarMap`] that the optimizer and checkpoints use.

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A [`VarMap`] whose new variables are drawn from a seeded generator.
pub struct SeededVarMap {
    varmap: VarMap,
    rng: Mutex<ChaCha8Rng>,
}

impl SeededVarMap {
    /// A backend that fills `varmap` with parameters drawn from `seed`.
    pub fn new(varmap: VarMap, seed: u64) -> Self {
        Self {
            varmap,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// A `VarBuilder` over a fresh seeded map, and the map it fills.
    ///
    /// ```
    /// use candle_core::{DType, Device};
    /// let (varmap, vb) = taper::init::seeded_var_builder(42, DType::F32, &Device::Cpu);
    /// let layer = candle_nn::linear(4, 2, vb.pp("fc")).unwrap();
    /// assert_eq!(varmap.all_vars().len(), 2);
    /// # let _ = layer;
    /// ```
    pub fn var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn draw(&self, shape: &Shape, init: Init) -> Vec<f32> {
        let n = shape.elem_count();
        let mut rng = self
            .rng
            .lock()
            .expect("the init generator is never poisoned");
        match init {
            Init::Const(value) => vec![value as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| (mean + stdev * standard_normal(&mut rng)) as f32)
                .collect(),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = fan.for_shape(shape) as f64;
                let std = non_linearity.gain() / fan.sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        (0..n)
                            .map(|_| rng.random_range(-bound..bound) as f32)
                            .collect()
                    }
                    candle_nn::init::NormalOrUniform::Normal => (0..n)
                        .map(|_| (std * standard_normal(&mut rng)) as f32)
                        .collect(),
                }
            }
        }
    }
}

/// A standard normal draw (Box-Muller): rand_distr is not worth a dependency for this.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(existing) = self.varmap.data().lock().unwrap().get(name) {
            if existing.shape() != &shape {
                candle_core::bail!(
                    "shape mismatch on {name}: {shape:?} <> {:?}",
                    existing.shape()
                )
            }
            return Ok(existing.as_tensor().clone());
        }
        let values = self.draw(&shape, init);
        let tensor = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let tensor = var.as_tensor().clone();
        self.varmap
            .data()
            .lock()
            .unwrap()
            .insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.varmap.data().lock().unwrap().get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("no parameter named {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().unwrap().contains_key(name)
    }
}

/// A fresh [`VarMap`] and a seeded `VarBuilder` that fills it.
pub fn seeded_var_builder(
    seed: u64,
    dtype: DType,
    device: &Device,
) -> (VarMap, VarBuilder<'static>) {
    let varmap = VarMap::new();
    let vb = SeededVarMap::new(varmap.clone(), seed).var_builder(dtype, device);
    (varmap, vb)
}
