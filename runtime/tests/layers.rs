//! Every layer's backward pass against central finite differences of a random projection
//! `J = sum(r * forward(x))`, for the input and for the parameters (f32, h = 1e-2, the error
//! of the central difference is O(h^2)).

use lossc_runtime::cpu::Cpu;
use lossc_runtime::layers::{BatchNorm, Conv2d, Dense, Dropout, GlobalAvgPool, Param};
use lossc_runtime::model::ResNet9v2;
use lossc_runtime::rng::Rng;

fn randv(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Checks `analytic` against central differences of `f` at `x` on a few coordinates.
fn check(what: &str, x: &mut [f32], analytic: &[f32], f: &mut dyn FnMut(&[f32]) -> f64) {
    let h = 1e-2f32;
    let mut rng = Rng::new(5);
    let scale = analytic.iter().fold(1e-3f32, |m, v| m.max(v.abs())) as f64;
    for _ in 0..24 {
        let i = rng.below(x.len());
        let v = x[i];
        x[i] = v + h;
        let up = f(x);
        x[i] = v - h;
        let down = f(x);
        x[i] = v;
        let fd = (up - down) / (2.0 * h as f64);
        let a = analytic[i] as f64;
        assert!((fd - a).abs() <= 2e-2 * scale + 1e-2 * a.abs(), "{what}[{i}]: analytic {a}, finite difference {fd}");
    }
}

/// Shapes cover strides 1 and 2, kernels 1 and 3, and (the last) several im2col groups of
/// unequal size per call, on one and two threads.
#[test]
fn conv2d_backward_matches_finite_differences() {
    for (k, stride, n, cin, hw, threads) in
        [(3, 1, 2, 3, (6, 5), 1), (3, 2, 2, 3, (6, 5), 1), (1, 2, 2, 3, (6, 5), 2), (3, 1, 8, 16, (12, 12), 2)]
    {
        lossc_runtime::layers::set_threads(threads);
        let mut rng = Rng::new(1);
        let cout = 4;
        let mut conv = Conv2d::new(&Cpu, &mut rng, cin, cout, k, stride, hw);
        let mut x = randv(&mut rng, n * cin * hw.0 * hw.1);
        let r = randv(&mut rng, n * cout * conv.geom.p());
        conv.forward(x.clone(), n);
        let dx = conv.backward(&r);
        let dw = conv.weight.grad.clone();
        let mut wv = conv.weight.value.clone();
        let what = format!("conv k{k} s{stride} n{n} cin{cin}");
        check(&format!("{what} dx"), &mut x.clone(), &dx, &mut |xx| dot(&r, &conv.forward(xx.to_vec(), n)));
        check(&format!("{what} dW"), &mut wv, &dw, &mut |ww| {
            conv.weight.value = ww.to_vec();
            dot(&r, &conv.forward(x.clone(), n))
        });
        x.clear();
    }
    lossc_runtime::layers::set_threads(1);
}

#[test]
fn batchnorm_with_and_without_swish_backward_matches_finite_differences() {
    for swish in [false, true] {
        let mut rng = Rng::new(2);
        let (n, c, hw) = (3, 2, 5);
        let mut bn = if swish { BatchNorm::with_swish(&Cpu, c, hw) } else { BatchNorm::new(&Cpu, c, hw) };
        bn.gamma.value = vec![1.5, -0.7];
        bn.beta.value = vec![0.2, 0.1];
        let x = randv(&mut rng, n * c * hw);
        let r = randv(&mut rng, n * c * hw);
        bn.forward(&x, n, true);
        let dx = bn.backward(&r);
        let (dg, db) = (bn.gamma.grad.clone(), bn.beta.grad.clone());
        let what = if swish { "bn+swish" } else { "bn" };
        check(&format!("{what} dx"), &mut x.clone(), &dx, &mut |xx| dot(&r, &bn.forward(&xx.to_vec(), n, true)));
        let mut g = bn.gamma.value.clone();
        check(&format!("{what} dgamma"), &mut g, &dg, &mut |gg| {
            bn.gamma.value = gg.to_vec();
            dot(&r, &bn.forward(&x, n, true))
        });
        bn.gamma.value = vec![1.5, -0.7];
        let mut b = bn.beta.value.clone();
        check(&format!("{what} dbeta"), &mut b, &db, &mut |bb| {
            bn.beta.value = bb.to_vec();
            dot(&r, &bn.forward(&x, n, true))
        });
    }
}

/// Batch norm + swish in both modes against the definition: batch statistics in training,
/// running statistics (after one update with momentum 0.9) in evaluation.
#[test]
fn batchnorm_swish_forward_matches_the_definition() {
    let mut rng = Rng::new(8);
    let (n, c, hw) = (4, 3, 7);
    let mut bn = BatchNorm::with_swish(&Cpu, c, hw);
    bn.gamma.value = vec![1.5, -0.7, 0.3];
    bn.beta.value = vec![0.2, 0.1, -2.0];
    let x: Vec<f32> = randv(&mut rng, n * c * hw).iter().map(|v| 3.0 * v + 1.0).collect();
    let train = bn.forward(&x, n, true);
    let eval = bn.forward(&x, n, false);
    let swish = |z: f64| z / (1.0 + (-z).exp());
    for ch in 0..c {
        let xs: Vec<f64> = x[ch * n * hw..(ch + 1) * n * hw].iter().map(|&v| v as f64).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        let (rm, rv) = (0.1 * mean, 0.9 + 0.1 * var);
        let (g, b) = (bn.gamma.value[ch] as f64, bn.beta.value[ch] as f64);
        for (j, &v) in xs.iter().enumerate() {
            let want = swish(g * (v - mean) / (var + 1e-3).sqrt() + b);
            let got = train[ch * n * hw + j] as f64;
            assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "train [{ch}, {j}]: {got} vs {want}");
            let want = swish(g * (v - rm) / (rv + 1e-3).sqrt() + b);
            let got = eval[ch * n * hw + j] as f64;
            assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "eval [{ch}, {j}]: {got} vs {want}");
        }
    }
}

/// The dropout mask drops exactly the units the rule `rng.f64() < rate` drops, with the same
/// draws (so a training run is the same whichever computes its masks), at common rates, tiny
/// ones, 0 and 1.
#[test]
fn dropout_masks_drop_where_a_uniform_draw_falls_below_the_rate() {
    let tiny = f32::from_bits(1); // 2^-149: scaled to 53 bits, far below one step
    for rate in [0.5f32, 0.3, 0.1, 0.9, 0.999_999, 1e-12, tiny, 0.0, 1.0, 2.0f32.powi(-53) * 1.5] {
        let mut a = Rng::new(17);
        let mut b = a.clone();
        let got = lossc_runtime::layers::dropout_mask(&mut a, 50_000, rate);
        let keep = if rate < 1.0 { 1.0 / (1.0 - rate) } else { 0.0 };
        let want: Vec<f32> = (0..50_000).map(|_| if b.f64() < rate as f64 { 0.0 } else { keep }).collect();
        assert_eq!(a, b, "rate {rate}: the draws");
        let differ = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
        assert_eq!(differ, None, "rate {rate}");
    }
}

#[test]
fn pool_dropout_and_dense_backward_match_finite_differences() {
    let mut rng = Rng::new(3);
    let x = randv(&mut rng, 40);
    let r = randv(&mut rng, 40);

    let mut pool = GlobalAvgPool::new(&Cpu, 4, 5);
    let r2 = randv(&mut rng, 8);
    pool.forward(&x, 2);
    let dx = pool.backward(&r2);
    check("pool", &mut x.clone(), &dx, &mut |xx| dot(&r2, &pool.forward(&xx.to_vec(), 2)));

    let mut d = Dropout::new(&Cpu, 0.5);
    d.forward(x.clone(), true, &mut Rng::new(9));
    let dx = d.backward(r.clone());
    check("dropout", &mut x.clone(), &dx, &mut |xx| {
        dot(&r, &Dropout::new(&Cpu, 0.5).forward(xx.to_vec(), true, &mut Rng::new(9)))
    });

    let mut dense = Dense::new(&Cpu, &mut rng, 10, 3);
    let r3 = randv(&mut rng, 12);
    dense.forward(x.clone(), 4);
    let dx = dense.backward(&r3);
    let (dw, db) = (dense.weight.grad.clone(), dense.bias.grad.clone());
    check("dense dx", &mut x.clone(), &dx, &mut |xx| dot(&r3, &dense.forward(xx.to_vec(), 4)));
    let mut w = dense.weight.value.clone();
    check("dense dW", &mut w, &dw, &mut |ww| {
        dense.weight.value = ww.to_vec();
        dot(&r3, &dense.forward(x.clone(), 4))
    });
    let mut b = dense.bias.value.clone();
    check("dense db", &mut b, &db, &mut |bb| {
        dense.bias.value = bb.to_vec();
        dot(&r3, &dense.forward(x.clone(), 4))
    });
}

#[test]
fn the_whole_model_backward_matches_finite_differences() {
    let mut model = ResNet9v2::new(4, (1, 8, 8), 3, 1);
    let mut rng = Rng::new(6);
    let n = 4;
    let x = randv(&mut rng, n * 64);
    let r = randv(&mut rng, n * 3);
    // Dropout off (same mask is not reproducible across calls otherwise): evaluate in training
    // mode for batch statistics, with a fixed rng.
    model.forward(&x, n, true, &mut Rng::new(1));
    model.backward(&r);
    let grads: Vec<Vec<f32>> = model.params().iter().map(|p| p.grad.clone()).collect();
    for (pi, g) in grads.iter().enumerate().step_by(5) {
        let mut v = model.params()[pi].value.clone();
        check(&format!("model param {pi}"), &mut v, g, &mut |vv| {
            let p: &mut Param<Cpu> = model.params().swap_remove(pi);
            p.value = vv.to_vec();
            dot(&r, &model.forward(&x, n, true, &mut Rng::new(1)))
        });
    }
}

/// The convolution's forward pass against the textbook loop (zero "same" padding) on `[C, N,
/// H, W]` activations: odd sizes, strides 1 and 2, kernels 1 and 3, images smaller than the
/// kernel, more threads than images, and (the last) one image per im2col group.
#[test]
fn conv2d_forward_matches_the_direct_definition() {
    for (k, stride, h, w, n, cin, threads) in [
        (3, 1, 7, 5, 2, 3, 1),
        (3, 2, 7, 6, 2, 3, 2),
        (1, 2, 5, 5, 2, 3, 1),
        (3, 2, 4, 9, 2, 3, 3),
        (3, 1, 2, 1, 2, 3, 1),
        (3, 1, 1, 1, 2, 3, 1),
        (3, 1, 32, 32, 3, 16, 2),
    ] {
        lossc_runtime::layers::set_threads(threads);
        let mut rng = Rng::new(5);
        let cout = 4;
        let mut conv = Conv2d::new(&Cpu, &mut rng, cin, cout, k, stride, (h, w));
        let x = randv(&mut rng, n * cin * h * w);
        let y = conv.forward(x.clone(), n);
        let (oh, ow) = (conv.geom.oh, conv.geom.ow);
        let pad = (k / 2) as isize;
        let wt = &conv.weight.value;
        for i in 0..n {
            for co in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for c in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * stride + ky) as isize - pad;
                                    let ix = (ox * stride + kx) as isize - pad;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        let xv = x[((c * n + i) * h + iy as usize) * w + ix as usize];
                                        acc += (wt[((co * cin + c) * k + ky) * k + kx] * xv) as f64;
                                    }
                                }
                            }
                        }
                        let got = y[((co * n + i) * oh + oy) * ow + ox] as f64;
                        assert!(
                            (got - acc).abs() < 1e-5,
                            "k{k} s{stride} {h}x{w}: y[{i},{co},{oy},{ox}] {got} vs {acc}"
                        );
                    }
                }
            }
        }
    }
    lossc_runtime::layers::set_threads(1);
}

/// The surrogate's multiply-adds per training image, counted by hand for width 1, 1x32x32 and
/// 10 classes (forward, per layer: cout * cin * k * k * oh * ow):
/// stem 8*1*9*1024 = 73,728; each block's stride-2 conv 294,912, two convs 589,824, the 1x1
/// shortcut 32,768 (block 1: 8->16 at 16x16 out; block 2: 16->32 at 8x8 out, the same
/// counts); dense 32*10 = 320. Training is three times each (forward, weight and input
/// gradients) except the stem's input gradient: 3 * 3,088,704 - 73,728.
#[test]
fn the_surrogate_counts_its_training_multiply_adds() {
    assert_eq!(ResNet9v2::new(0, (1, 32, 32), 10, 1).train_macs_per_image(), 9_192_384);
    // Width 2 doubles both channel counts of every conv but the stem's input channel, and the
    // dense layer's input: 4x the blocks', 2x the stem's and the dense layer's.
    let blocks = 2 * 1_507_328;
    assert_eq!(
        ResNet9v2::new(0, (1, 32, 32), 10, 2).train_macs_per_image(),
        2 * 2 * 73_728 + 3 * (4 * blocks + 2 * 320)
    );
}
