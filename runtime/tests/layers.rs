//! Every layer's backward pass against central finite differences of a random projection
//! `J = sum(r * forward(x))`, for the input and for the parameters (f32, h = 1e-2, the error
//! of the central difference is O(h^2)).

use lossc_runtime::layers::{BatchNorm, Conv2d, Dense, Dropout, GlobalAvgPool, Param, Swish};
use lossc_runtime::model::ResNet9v2;
use lossc_runtime::rng::Rng;

fn randv(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Checks `analytic` against central differences of `f` at `x` on a few coordinates.
fn check(what: &str, x: &mut Vec<f32>, analytic: &[f32], f: &mut dyn FnMut(&[f32]) -> f64) {
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

#[test]
fn conv2d_backward_matches_finite_differences() {
    for (k, stride) in [(3, 1), (3, 2), (1, 2)] {
        let mut rng = Rng::new(1);
        let (n, cin, cout, h, w) = (2, 3, 4, 6, 5);
        let mut conv = Conv2d::new(&mut rng, cin, cout, k, stride, (h, w));
        let mut x = randv(&mut rng, n * cin * h * w);
        let r = randv(&mut rng, n * cout * conv.oh * conv.ow);
        conv.forward(&x, n);
        let dx = conv.backward(&r);
        let dw = conv.weight.grad.clone();
        let mut wv = conv.weight.value.clone();
        check(&format!("conv k{k} s{stride} dx"), &mut x.clone(), &dx, &mut |xx| dot(&r, &conv.forward(xx, n)));
        check(&format!("conv k{k} s{stride} dW"), &mut wv, &dw, &mut |ww| {
            conv.weight.value = ww.to_vec();
            dot(&r, &conv.forward(&x, n))
        });
        x.clear();
    }
}

#[test]
fn batchnorm_backward_matches_finite_differences() {
    let mut rng = Rng::new(2);
    let (n, c, hw) = (3, 2, 5);
    let mut bn = BatchNorm::new(c, hw);
    bn.gamma.value = vec![1.5, -0.7];
    bn.beta.value = vec![0.2, 0.1];
    let x = randv(&mut rng, n * c * hw);
    let r = randv(&mut rng, n * c * hw);
    bn.forward(&x, n, true);
    let dx = bn.backward(&r);
    let (dg, db) = (bn.gamma.grad.clone(), bn.beta.grad.clone());
    check("bn dx", &mut x.clone(), &dx, &mut |xx| dot(&r, &bn.forward(xx, n, true)));
    let mut g = bn.gamma.value.clone();
    check("bn dgamma", &mut g, &dg, &mut |gg| {
        bn.gamma.value = gg.to_vec();
        dot(&r, &bn.forward(&x, n, true))
    });
    bn.gamma.value = vec![1.5, -0.7];
    let mut b = bn.beta.value.clone();
    check("bn dbeta", &mut b, &db, &mut |bb| {
        bn.beta.value = bb.to_vec();
        dot(&r, &bn.forward(&x, n, true))
    });
}

#[test]
fn swish_pool_dropout_and_dense_backward_match_finite_differences() {
    let mut rng = Rng::new(3);
    let x = randv(&mut rng, 40);
    let r = randv(&mut rng, 40);
    let mut s = Swish::default();
    s.forward(&x);
    let dx = s.backward(&r);
    check("swish", &mut x.clone(), &dx, &mut |xx| dot(&r, &Swish::default().forward(xx)));

    let pool = GlobalAvgPool { c: 4, hw: 5 };
    let r2 = randv(&mut rng, 8);
    let dx = pool.backward(&r2);
    check("pool", &mut x.clone(), &dx, &mut |xx| dot(&r2, &pool.forward(xx, 2)));

    let mut d = Dropout::new(0.5);
    d.forward(&x, true, &mut Rng::new(9));
    let dx = d.backward(&r);
    check("dropout", &mut x.clone(), &dx, &mut |xx| dot(&r, &Dropout::new(0.5).forward(xx, true, &mut Rng::new(9))));

    let mut dense = Dense::new(&mut rng, 10, 3);
    let r3 = randv(&mut rng, 12);
    dense.forward(&x, 4);
    let dx = dense.backward(&r3);
    let (dw, db) = (dense.weight.grad.clone(), dense.bias.grad.clone());
    check("dense dx", &mut x.clone(), &dx, &mut |xx| dot(&r3, &dense.forward(xx, 4)));
    let mut w = dense.weight.value.clone();
    check("dense dW", &mut w, &dw, &mut |ww| {
        dense.weight.value = ww.to_vec();
        dot(&r3, &dense.forward(&x, 4))
    });
    let mut b = dense.bias.value.clone();
    check("dense db", &mut b, &db, &mut |bb| {
        dense.bias.value = bb.to_vec();
        dot(&r3, &dense.forward(&x, 4))
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
            let p: &mut Param = model.params().swap_remove(pi);
            p.value = vv.to_vec();
            dot(&r, &model.forward(&x, n, true, &mut Rng::new(1)))
        });
    }
}

/// The convolution's forward pass against the textbook loop (zero "same" padding), on odd
/// sizes, strides 1 and 2, kernels 1 and 3, and more threads than images.
#[test]
fn conv2d_forward_matches_the_direct_definition() {
    for (k, stride, h, w, threads) in
        [(3, 1, 7, 5, 1), (3, 2, 7, 6, 2), (1, 2, 5, 5, 1), (3, 2, 4, 9, 3), (3, 1, 2, 1, 1)]
    {
        lossc_runtime::layers::set_threads(threads);
        let mut rng = Rng::new(5);
        let (n, cin, cout) = (2, 3, 4);
        let mut conv = Conv2d::new(&mut rng, cin, cout, k, stride, (h, w));
        let x = randv(&mut rng, n * cin * h * w);
        let y = conv.forward(&x, n);
        let pad = (k / 2) as isize;
        let wt = &conv.weight.value;
        for i in 0..n {
            for co in 0..cout {
                for oy in 0..conv.oh {
                    for ox in 0..conv.ow {
                        let mut acc = 0.0f64;
                        for c in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * stride + ky) as isize - pad;
                                    let ix = (ox * stride + kx) as isize - pad;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        let xv = x[((i * cin + c) * h + iy as usize) * w + ix as usize];
                                        acc += (wt[((co * cin + c) * k + ky) * k + kx] * xv) as f64;
                                    }
                                }
                            }
                        }
                        let got = y[((i * cout + co) * conv.oh + oy) * conv.ow + ox] as f64;
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
