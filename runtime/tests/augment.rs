//! Augmentations on small known images.

use lossc_runtime::augment::{self, Augment, RandOp, Technique};
use lossc_runtime::rng::Rng;

const SHAPE: (usize, usize, usize) = (3, 6, 5);

/// An image on the 8-bit grid (as real data is), all values distinct per channel.
fn image() -> Vec<f32> {
    (0..90).map(|i| ((i * 37) % 256) as f32 / 255.0).collect()
}

#[test]
fn flipping_twice_is_the_identity_and_once_mirrors() {
    let img = image();
    let mut a = img.clone();
    augment::flip(&mut a, SHAPE);
    assert_ne!(a, img);
    assert_eq!(a[0], img[4]); // row 0 of channel 0: x = 0 <- x = 4
    augment::flip(&mut a, SHAPE);
    assert_eq!(a, img);
}

#[test]
fn cutout_zeroes_exactly_its_square() {
    let img = vec![1.0; 90];
    let mut a = img.clone();
    augment::cutout_at(&mut a, SHAPE, 2, 2, 2); // rows 1..3, columns 1..3
    for ch in 0..3 {
        for y in 0..6 {
            for x in 0..5 {
                let inside = (1..3).contains(&y) && (1..3).contains(&x);
                assert_eq!(a[(ch * 6 + y) * 5 + x], if inside { 0.0 } else { 1.0 }, "({ch},{y},{x})");
            }
        }
    }
}

#[test]
fn mixup_of_an_image_with_itself_is_that_image() {
    let img = image();
    for lam in [0.0, 0.3, 1.0] {
        let m = augment::mix(&img, &img, lam);
        for (a, b) in m.iter().zip(&img) {
            assert!((a - b).abs() <= 1e-7);
        }
    }
}

#[test]
fn randaug_ops_at_magnitude_zero_are_the_identity_where_that_holds() {
    let img = image();
    // Every op but these three: a new op is held to the identity at 0 unless listed here.
    let not_identities = [RandOp::Invert, RandOp::AutoContrast, RandOp::Equalize];
    for &op in RandOp::ALL.iter().filter(|o| !not_identities.contains(o)) {
        let mut a = img.clone();
        augment::randaug(op, 0.0, &mut a, SHAPE, &mut Rng::new(1));
        for (x, y) in a.iter().zip(&img) {
            assert!((x - y).abs() <= 1e-6, "{op:?} at magnitude 0 changed the image");
        }
    }
    // The others are not identities, and every op changes the image at magnitude 10.
    for op in not_identities {
        let mut a = img.clone();
        augment::randaug(op, 0.0, &mut a, SHAPE, &mut Rng::new(1));
        assert_ne!(a, img, "{op:?}");
    }
    for &op in RandOp::ALL.iter().filter(|o| !matches!(o, RandOp::Identity | RandOp::Color)) {
        let mut a = img.clone();
        augment::randaug(op, 10.0, &mut a, SHAPE, &mut Rng::new(1));
        assert_ne!(a, img, "{op:?} at magnitude 10 left the image unchanged");
    }
}

#[test]
fn every_technique_is_deterministic_for_a_seed_and_mixup_pairs_targets() {
    let imgs: Vec<f32> = (0..4).flat_map(|_| image()).collect();
    let labels = [0, 1, 2, 3];
    for t in ["base", "cutout", "mixup", "randaug", "all"] {
        let a = Augment::new(Technique::parse(t).unwrap());
        let x = augment::apply(&a, &imgs, &labels, SHAPE, &mut Rng::new(3));
        let y = augment::apply(&a, &imgs, &labels, SHAPE, &mut Rng::new(3));
        assert_eq!(x.images, y.images, "{t}");
        let mixed = matches!(t, "mixup" | "all");
        assert_eq!(x.lam.is_some(), mixed, "{t}");
        if let Some(lam) = &x.lam {
            assert!(lam.iter().all(|l| (0.0..=1.0).contains(l)));
            assert_eq!(x.labels_b.as_ref().unwrap().len(), 4);
        }
    }
}

#[test]
fn beta_samples_have_the_right_mean_and_spread() {
    let mut rng = Rng::new(4);
    let xs: Vec<f64> = (0..20000).map(|_| augment::beta(0.4, &mut rng)).collect();
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    // Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1389 for a = 0.4.
    assert!((mean - 0.5).abs() < 0.01, "{mean}");
    assert!((var - 1.0 / (4.0 * 1.8)).abs() < 0.01, "{var}");
}
