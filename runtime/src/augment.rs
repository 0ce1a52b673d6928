//! The five augmentation techniques of the paper (SPEC section 6), seeded and deterministic:
//! base (zero-pad, random crop, horizontal flip), cutout, mixup, RandAug, and all of them.
//! Images are [C, H, W] f32 in [0, 1].

use crate::rng::Rng;

/// Which technique.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Technique {
    Base,
    Cutout,
    Mixup,
    RandAug,
    All,
}

impl Technique {
    pub fn parse(s: &str) -> Option<Technique> {
        Some(match s {
            "base" => Technique::Base,
            "cutout" => Technique::Cutout,
            "mixup" => Technique::Mixup,
            "randaug" => Technique::RandAug,
            "all" => Technique::All,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Technique::Base => "base",
            Technique::Cutout => "cutout",
            Technique::Mixup => "mixup",
            Technique::RandAug => "randaug",
            Technique::All => "all",
        }
    }
}

/// A technique with its settings (SPEC leaves sizes open; these are the usual values).
#[derive(Clone, Copy, Debug)]
pub struct Augment {
    pub technique: Technique,
    /// Zero padding before the random crop.
    pub pad: usize,
    /// Side of the cutout square.
    pub cutout: usize,
    /// Mixup's Beta(alpha, alpha).
    pub mixup_alpha: f64,
    /// RandAug: ops per image and magnitude (of 10).
    pub randaug_n: usize,
    pub randaug_m: f32,
}

/// The settings' usual values: pad 4, a 16x16 cutout (on 32x32 images), mixup's alpha 0.4,
/// RandAug's 2 ops at magnitude 5 of 10 (the predecessor's).
pub const PAD: usize = 4;
pub const CUTOUT: usize = 16;
pub const MIXUP_ALPHA: f64 = 0.4;
pub const RANDAUG_N: usize = 2;
pub const RANDAUG_M: f32 = 5.0;

impl Augment {
    pub fn new(technique: Technique) -> Augment {
        Augment {
            technique,
            pad: PAD,
            cutout: CUTOUT,
            mixup_alpha: MIXUP_ALPHA,
            randaug_n: RANDAUG_N,
            randaug_m: RANDAUG_M,
        }
    }

    /// Whether its plans are gathers (no RandAug op): see [`is_gather`].
    pub fn is_gather(&self) -> bool {
        !matches!(self.technique, Technique::RandAug | Technique::All) || self.randaug_n == 0
    }
}

/// An augmented batch: images, and targets as label pairs when mixed.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub labels_b: Option<Vec<u32>>,
    pub lam: Option<Vec<f32>>,
}

/// One image's random draws, in the order the generator makes them.
#[derive(Clone, Debug)]
pub struct Draw {
    /// The crop's offset from the centre, in -pad..=pad.
    pub dy: isize,
    pub dx: isize,
    pub flip: bool,
    /// RandAug ops with their sign and (for its cutout) centre.
    pub ops: Vec<(RandOp, f32, (usize, usize))>,
    /// The cutout square's centre.
    pub cutout: Option<(usize, usize)>,
}

/// A batch's draws: per image, then mixup's partners and weights.
#[derive(Clone, Debug)]
pub struct Plan {
    pub images: Vec<Draw>,
    pub mix: Option<(Vec<usize>, Vec<f32>)>,
}

/// Draws everything a batch of `n` images of shape `shape` needs, as [`apply`] consumes it.
pub fn plan(a: &Augment, n: usize, (_, h, w): (usize, usize, usize), rng: &mut Rng) -> Plan {
    let t = a.technique;
    let p = a.pad as isize;
    let images = (0..n)
        .map(|_| {
            let dy = rng.below(2 * a.pad + 1) as isize - p;
            let dx = rng.below(2 * a.pad + 1) as isize - p;
            let flip = rng.chance(0.5);
            let mut ops = Vec::new();
            if matches!(t, Technique::RandAug | Technique::All) {
                for _ in 0..a.randaug_n {
                    let op = *rng.pick(RandOp::ALL);
                    let sign = if rng.chance(0.5) { 1.0 } else { -1.0 };
                    let at = if op == RandOp::Cutout { (rng.below(h), rng.below(w)) } else { (0, 0) };
                    ops.push((op, sign, at));
                }
            }
            let cutout = matches!(t, Technique::Cutout | Technique::All).then(|| (rng.below(h), rng.below(w)));
            Draw { dy, dx, flip, ops, cutout }
        })
        .collect();
    let mix = matches!(t, Technique::Mixup | Technique::All).then(|| {
        let perm = permutation(n, rng);
        let lam: Vec<f32> = (0..n).map(|_| beta(a.mixup_alpha, rng) as f32).collect();
        (perm, lam)
    });
    Plan { images, mix }
}

/// A gather plan for batch images `idx` as the GPU devices' `augment` kernel reads it: per
/// image, 8 words (source image, shift + pad in y and x, flip, cutout or not, cutout centre y
/// and x, mixup partner).
pub fn gather_draws(idx: &[usize], plan: &Plan, a: &Augment) -> Vec<u32> {
    let u = |x: usize| u32::try_from(x).expect("batch indices fit in u32");
    let mut draws = Vec::with_capacity(8 * idx.len());
    for (i, (&j, d)) in idx.iter().zip(&plan.images).enumerate() {
        let (cy, cx) = d.cutout.unwrap_or((0, 0));
        let partner = plan.mix.as_ref().map_or(i, |(perm, _)| perm[i]);
        let shift = |v: isize| (v + a.pad as isize) as u32;
        draws.extend([
            u(j),
            shift(d.dy),
            shift(d.dx),
            d.flip as u32,
            d.cutout.is_some() as u32,
            u(cy),
            u(cx),
            u(partner),
        ]);
    }
    draws
}

/// Whether a plan is pixel moves, zeroing and mixing only (no RandAug op), which a device can
/// apply while gathering the batch from a resident data set.
pub fn is_gather(plan: &Plan) -> bool {
    plan.images.iter().all(|d| d.ops.is_empty())
}

/// Augments a batch of `n` images of shape `shape`.
pub fn apply(a: &Augment, images: &[f32], labels: &[u32], shape: (usize, usize, usize), rng: &mut Rng) -> Batch {
    let plan = plan(a, labels.len(), shape, rng);
    apply_plan(a, &plan, images, labels, shape)
}

/// Applies a batch's draws on the host.
pub fn apply_plan(a: &Augment, plan: &Plan, images: &[f32], labels: &[u32], shape: (usize, usize, usize)) -> Batch {
    let n = labels.len();
    let size = shape.0 * shape.1 * shape.2;
    let mut out = images.to_vec();
    for (img, d) in out.chunks_mut(size).zip(&plan.images) {
        shift(img, shape, d.dy, d.dx);
        if d.flip {
            flip(img, shape);
        }
        for &(op, sign, at) in &d.ops {
            randaug_with(op, a.randaug_m, sign, at, img, shape);
        }
        if let Some((cy, cx)) = d.cutout {
            cutout_at(img, shape, cy, cx, a.cutout);
        }
    }
    if let Some((perm, lam)) = &plan.mix {
        let mixed: Vec<f32> = (0..n)
            .flat_map(|i| {
                let (x, y, l) = (&out[i * size..(i + 1) * size], &out[perm[i] * size..(perm[i] + 1) * size], lam[i]);
                mix(x, y, l)
            })
            .collect();
        let labels_b = perm.iter().map(|&j| labels[j]).collect();
        return Batch { images: mixed, labels: labels.to_vec(), labels_b: Some(labels_b), lam: Some(lam.clone()) };
    }
    Batch { images: out, labels: labels.to_vec(), labels_b: None, lam: None }
}

/// `lam x + (1 - lam) y`.
pub fn mix(x: &[f32], y: &[f32], lam: f32) -> Vec<f32> {
    x.iter().zip(y).map(|(a, b)| lam * a + (1.0 - lam) * b).collect()
}

fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

/// Gamma(k, 1) by Marsaglia & Tsang (with the k < 1 boost).
fn gamma(k: f64, rng: &mut Rng) -> f64 {
    if k < 1.0 {
        return gamma(k + 1.0, rng) * (1.0 - rng.f64()).powf(1.0 / k);
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - rng.f64();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Beta(a, a).
pub fn beta(a: f64, rng: &mut Rng) -> f64 {
    let (x, y) = (gamma(a, rng), gamma(a, rng));
    x / (x + y)
}

/// Horizontal flip in place.
pub fn flip(img: &mut [f32], (c, h, w): (usize, usize, usize)) {
    for ch in 0..c {
        for y in 0..h {
            img[(ch * h + y) * w..(ch * h + y + 1) * w].reverse();
        }
    }
}

/// Zero-pad by `pad`, crop back at (dy, dx) in [0, 2 pad]: a shift with zero fill.
pub fn shift(img: &mut [f32], (c, h, w): (usize, usize, usize), dy: isize, dx: isize) {
    let src = img.to_vec();
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y as isize + dy, x as isize + dx);
                let inside = sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w;
                img[(ch * h + y) * w + x] = if inside { src[(ch * h + sy as usize) * w + sx as usize] } else { 0.0 };
            }
        }
    }
}

/// Zeroes the `side` x `side` square centred at (cy, cx), clipped to the image.
pub fn cutout_at(img: &mut [f32], (c, h, w): (usize, usize, usize), cy: usize, cx: usize, side: usize) {
    let (y0, x0) = (cy.saturating_sub(side / 2), cx.saturating_sub(side / 2));
    let (y1, x1) = ((cy + side.div_ceil(2)).min(h), (cx + side.div_ceil(2)).min(w));
    for ch in 0..c {
        for y in y0..y1 {
            for x in x0..x1 {
                img[(ch * h + y) * w + x] = 0.0;
            }
        }
    }
}

/// The RandAug operations (the predecessor's list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RandOp {
    Identity,
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Cutout,
    SolarizeAdd,
}

impl RandOp {
    pub const ALL: &'static [RandOp] = &[
        RandOp::Identity,
        RandOp::AutoContrast,
        RandOp::Equalize,
        RandOp::Invert,
        RandOp::Rotate,
        RandOp::Posterize,
        RandOp::Solarize,
        RandOp::Color,
        RandOp::Contrast,
        RandOp::Brightness,
        RandOp::Sharpness,
        RandOp::ShearX,
        RandOp::ShearY,
        RandOp::TranslateX,
        RandOp::TranslateY,
        RandOp::Cutout,
        RandOp::SolarizeAdd,
    ];
}

/// Blends towards `other` by `factor` (1 = unchanged): the enhance operations.
fn blend(img: &mut [f32], other: &[f32], factor: f32) {
    for (a, b) in img.iter_mut().zip(other) {
        *a = (b + factor * (*a - b)).clamp(0.0, 1.0);
    }
}

/// Samples `img` at an affine map of the output coordinates (nearest neighbour, zero fill).
fn affine(img: &mut [f32], (c, h, w): (usize, usize, usize), map: impl Fn(f32, f32) -> (f32, f32)) {
    let src = img.to_vec();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = map(y as f32 - cy, x as f32 - cx);
            let (sy, sx) = ((sy + cy).round(), (sx + cx).round());
            let inside = sy >= 0.0 && sx >= 0.0 && (sy as usize) < h && (sx as usize) < w;
            for ch in 0..c {
                img[(ch * h + y) * w + x] = if inside { src[(ch * h + sy as usize) * w + sx as usize] } else { 0.0 };
            }
        }
    }
}

/// Applies one RandAug op at magnitude `m` (of 10); a random sign for the signed ones.
pub fn randaug(op: RandOp, m: f32, img: &mut [f32], shape: (usize, usize, usize), rng: &mut Rng) {
    let sign = if rng.chance(0.5) { 1.0 } else { -1.0 };
    let at = if op == RandOp::Cutout { (rng.below(shape.1), rng.below(shape.2)) } else { (0, 0) };
    randaug_with(op, m, sign, at, img, shape);
}

/// [`randaug`] with its draws given: the sign, and the centre of its cutout.
pub fn randaug_with(op: RandOp, m: f32, sign: f32, at: (usize, usize), img: &mut [f32], shape: (usize, usize, usize)) {
    let (c, h, w) = shape;
    let level = m / 10.0;
    let plane = h * w;
    match op {
        RandOp::Identity => {}
        RandOp::AutoContrast => {
            for ch in img.chunks_mut(plane) {
                let (lo, hi) = ch.iter().fold((f32::MAX, f32::MIN), |(l, u), &v| (l.min(v), u.max(v)));
                if hi > lo {
                    ch.iter_mut().for_each(|v| *v = (*v - lo) / (hi - lo));
                }
            }
        }
        RandOp::Equalize => {
            for ch in img.chunks_mut(plane) {
                let mut hist = [0usize; 256];
                ch.iter().for_each(|&v| hist[(v.clamp(0.0, 1.0) * 255.0).round() as usize] += 1);
                let mut cdf = [0usize; 256];
                let mut acc = 0;
                for (i, &k) in hist.iter().enumerate() {
                    acc += k;
                    cdf[i] = acc;
                }
                let min = cdf.iter().copied().find(|&k| k > 0).unwrap_or(0);
                if plane > min {
                    ch.iter_mut().for_each(|v| {
                        let k = cdf[(v.clamp(0.0, 1.0) * 255.0).round() as usize];
                        *v = (k - min) as f32 / (plane - min) as f32;
                    });
                }
            }
        }
        RandOp::Invert => img.iter_mut().for_each(|v| *v = 1.0 - *v),
        RandOp::Rotate => {
            let a = (sign * level * 30.0f32).to_radians();
            let (s, co) = a.sin_cos();
            affine(img, shape, |y, x| (co * y - s * x, s * y + co * x));
        }
        RandOp::Posterize => {
            let bits = (8.0 - (level * 4.0).round()) as i32;
            let q = (1 << (8 - bits)) as f32;
            img.iter_mut().for_each(|v| *v = ((*v * 255.0).round() / q).floor() * q / 255.0);
        }
        RandOp::Solarize => {
            let t = 1.0 - level;
            img.iter_mut().for_each(|v| {
                if *v > t {
                    *v = 1.0 - *v
                }
            });
        }
        RandOp::Color => {
            if c == 3 {
                let gray: Vec<f32> =
                    (0..plane).map(|i| 0.299 * img[i] + 0.587 * img[plane + i] + 0.114 * img[2 * plane + i]).collect();
                let gray3: Vec<f32> = gray.iter().cycle().take(3 * plane).copied().collect();
                blend(img, &gray3, 1.0 + sign * level * 0.9);
            }
        }
        RandOp::Contrast => {
            let mean = img.iter().sum::<f32>() / img.len() as f32;
            let other = vec![mean; img.len()];
            blend(img, &other, 1.0 + sign * level * 0.9);
        }
        RandOp::Brightness => blend(img, &vec![0.0; img.len()], 1.0 + sign * level * 0.9),
        RandOp::Sharpness => {
            let mut smooth = img.to_vec();
            for ch in 0..c {
                for y in 1..h.saturating_sub(1) {
                    for x in 1..w.saturating_sub(1) {
                        let mut s = 0.0;
                        for (dy, dx, k) in [(0, 0, 5.0), (-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0)] {
                            let (yy, xx) = ((y as isize + dy) as usize, (x as isize + dx) as usize);
                            s += k * img[(ch * h + yy) * w + xx];
                        }
                        smooth[(ch * h + y) * w + x] = s / 9.0; // PIL-style smoothing: 5 centre + 4 neighbours
                    }
                }
            }
            blend(img, &smooth, 1.0 + sign * level * 0.9);
        }
        RandOp::ShearX => {
            let s = sign * level * 0.3;
            affine(img, shape, |y, x| (y, x + s * y));
        }
        RandOp::ShearY => {
            let s = sign * level * 0.3;
            affine(img, shape, |y, x| (y + s * x, x));
        }
        RandOp::TranslateX => shift(img, shape, 0, (sign * level * 0.45 * w as f32).round() as isize),
        RandOp::TranslateY => shift(img, shape, (sign * level * 0.45 * h as f32).round() as isize, 0),
        RandOp::Cutout => {
            let side = (level * 0.2 * h as f32).round() as usize;
            cutout_at(img, shape, at.0, at.1, side);
        }
        RandOp::SolarizeAdd => {
            let add = level * 110.0 / 255.0;
            img.iter_mut().for_each(|v| {
                if *v < 0.5 {
                    *v = (*v + add).min(1.0)
                }
            });
        }
    }
}
