//! The fused ops against candle's composed ops (`portable.rs`, a GPU's path): values and
//! gradients.

use super::*;
use candle_core::{Device, Var};

fn rand(shape: &[usize], seed: u64) -> Var {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Forward values and the gradients of `Σ out ⊙ w` for every var agree within `tol`.
fn same(vars: &[&Var], ours: impl Fn() -> Tensor, reference: impl Fn() -> Tensor, tol: f32) {
    let (a, b) = (ours(), reference());
    assert!(
        max_diff(&a, &b) < tol,
        "forward differs: {}",
        max_diff(&a, &b)
    );
    let w = rand(a.dims(), 99);
    let ga = (a * w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gb = (b * w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, v) in vars.iter().enumerate() {
        let d = max_diff(
            ga.get(v.as_tensor()).unwrap(),
            gb.get(v.as_tensor()).unwrap(),
        );
        assert!(d < tol, "gradient of input {i} differs by {d}");
    }
}

#[test]
fn linear_matches_composed_candle_ops() {
    let (x, w, b) = (rand(&[150, 24], 1), rand(&[40, 24], 2), rand(&[40], 3));
    same(
        &[&x, &w, &b],
        || linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap(),
        || portable::linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap(),
        1e-4,
    );
}

#[test]
fn layer_norm_matches_composed_candle_ops() {
    let (x, g, b) = (rand(&[130, 48], 4), rand(&[48], 5), rand(&[48], 6));
    same(
        &[&x, &g, &b],
        || layer_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-12).unwrap(),
        || portable::layer_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-12).unwrap(),
        1e-4,
    );
}

#[test]
fn attention_matches_composed_candle_ops_with_padding_and_dropout() {
    let (b, t, heads, hd) = (3, 7, 2, 4);
    let h = heads * hd;
    let qkv = rand(&[b * t, 3 * h], 7);
    // Sequence lengths 7, 4 and 1.
    let lens = [7, 4, 1];
    let key_bias: Vec<f32> = (0..b * t)
        .map(|i| if i % t < lens[i / t] { 0.0 } else { -10_000.0 })
        .collect();
    let drop: Vec<f32> = (0..b * heads * t * t)
        .map(|i| if i % 5 == 0 { 0.0 } else { 1.25 })
        .collect();
    let op = Attention {
        b,
        t,
        heads,
        hd,
        key_bias: Arc::new(key_bias.clone()),
        dropout: Some(Arc::new(drop.clone())),
    };
    same(
        &[&qkv],
        || attention(qkv.as_tensor(), op.clone()).unwrap(),
        || portable::attention(qkv.as_tensor(), &op).unwrap(),
        1e-4,
    );
}
