//! Helpers shared by the integration tests.

use taper::Model;

/// Every parameter of `model`, sorted by name, as flat f32 values.
pub fn weights(model: &impl Model) -> Vec<(String, Vec<f32>)> {
    let mut vars: Vec<(String, Vec<f32>)> = model
        .varmap()
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(name, var)| {
            (
                name.clone(),
                var.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}
