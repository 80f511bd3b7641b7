//! `Gradients`: accumulation by summing, the global L2 norm, clipping by it
//! and scaling.

use taper::optim::Gradients;

mod optim_common;
use optim_common::{assert_close, tensor};

fn grad_values(g: &Gradients) -> Vec<Option<Vec<f32>>> {
    g.iter()
        .map(|t| t.map(|t| t.to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn gradients_accumulate_by_summing() {
    let mut total = Gradients::default();
    total
        .accumulate(Gradients::from_vec(vec![
            Some(tensor(&[1.0, 2.0])),
            None,
            Some(tensor(&[0.5])),
        ]))
        .unwrap();
    total
        .accumulate(Gradients::from_vec(vec![
            Some(tensor(&[0.25, -4.0])),
            Some(tensor(&[3.0, 3.0, 3.0])),
            None,
        ]))
        .unwrap();
    total
        .accumulate(Gradients::from_vec(vec![
            Some(tensor(&[1.0, 1.0])),
            Some(tensor(&[1.0, 2.0, 3.0])),
            None,
        ]))
        .unwrap();
    assert_eq!(
        grad_values(&total),
        vec![
            Some(vec![2.25, -1.0]),
            Some(vec![4.0, 5.0, 6.0]),
            Some(vec![0.5]),
        ]
    );
    assert!(total.get(3).is_none());
}

#[test]
fn gradients_global_norm_is_the_l2_norm_of_everything() {
    let g = Gradients::from_vec(vec![
        Some(tensor(&[3.0, 0.0])),
        None,
        Some(tensor(&[4.0, 12.0])),
    ]);
    assert!((g.global_norm().unwrap() - 13.0).abs() < 1e-6);
    assert_eq!(Gradients::default().global_norm().unwrap(), 0.0);
    let none = Gradients::from_vec(vec![None, None]);
    assert_eq!(none.global_norm().unwrap(), 0.0);
}

#[test]
fn clip_global_norm_scales_down_large_gradients_only() {
    let make = || {
        Gradients::from_vec(vec![
            Some(tensor(&[3.0, 0.0])),
            None,
            Some(tensor(&[4.0, 12.0])),
        ])
    };
    // Larger than the limit: scaled to the limit, direction kept.
    let mut g = make();
    let before = g.clip_global_norm(1.0).unwrap();
    assert!((before - 13.0).abs() < 1e-6);
    let after = g.global_norm().unwrap();
    assert!((after - 1.0).abs() <= 1e-5, "norm after clipping: {after}");
    let values = grad_values(&g);
    assert!(values[1].is_none());
    let scaled: Vec<f32> = values[0]
        .iter()
        .chain(values[2].iter())
        .flatten()
        .copied()
        .collect();
    let expected: Vec<f64> = [3.0, 0.0, 4.0, 12.0].iter().map(|x| x / 13.0).collect();
    assert_close(&scaled, &expected, 1e-6);

    // Smaller than the limit: untouched.
    let mut g = make();
    let before = g.clip_global_norm(20.0).unwrap();
    assert!((before - 13.0).abs() < 1e-6);
    assert_eq!(grad_values(&g), grad_values(&make()));
}

#[test]
fn gradients_scale() {
    let mut g = Gradients::from_vec(vec![Some(tensor(&[1.0, -2.0])), None]);
    g.scale(0.25).unwrap();
    assert_eq!(grad_values(&g), vec![Some(vec![0.25, -0.5]), None]);
}
