//! The row passes of a JIT kernel that do not depend on the loss: the max and `exp(z - m)`
//! pass, and the final gradient pass. The generated code calls them per row.
//!
//! Why not emit them: Cranelift 0.135 has only 128-bit vectors, and these passes are most of
//! the time of a kernel whose loss is cheap (CE, or any loss with integer labels whose
//! off-target terms vanish). rustc compiles them here for AVX2 + FMA (8 lanes) when the
//! processor has both, the softmax pass also for AVX-512 (16 lanes), and the kernel is built
//! with the addresses that match the processor. The `exp` gives
//! the math library's bits: the baseline build calls `mathlib::exp` on [`Scalar`] lanes, and
//! the AVX2 build restates it in intrinsics, checked bit for bit by the tests below, so the
//! accuracy table (docs/math-accuracy.md) holds for both. (The baseline build on an x86
//! without FMA computes its fused multiply-adds in software: correct, and slow.)

use super::jit_pass::GROUP_ROWS;
use super::mathlib::{self, Scalar};
use super::vm;
use crate::ir::{BinOp, UnOp};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `e[i] = exp(z[i] - max z)` for `i < c`, zeros in `e[c..]`; returns `sum e`. The
/// baseline build; `avx2::softmax_exp_body` is the same computation on 8 lanes.
///
/// The max skips NaN (compare and keep), so a NaN logit still poisons its own `exp` and the
/// sum, as the contract's reference does.
#[inline(always)]
fn softmax_exp_body(z: &[f32], e: &mut [f32]) -> f32 {
    let m = z.iter().fold(f32::NEG_INFINITY, |m, &v| if m < v { v } else { m });
    let mut sum = 0.0;
    for (e, &z) in e.iter_mut().zip(z) {
        *e = mathlib::exp(&mut Scalar, z - m);
        sum += *e;
    }
    e[z.len()..].fill(0.0);
    sum
}

/// [`softmax_exp_body`] for consecutive rows of `c` logits, each writing its `e` into the
/// matching row of `g` (no padding) and its sum into `sums`.
#[inline(always)]
fn softmax_rows_body(z: &[f32], c: usize, g: &mut [f32], sums: &mut [f32]) {
    for ((z, g), s) in z.chunks_exact(c).zip(g.chunks_exact_mut(c)).zip(sums) {
        *s = softmax_exp_body(z, g);
    }
}

/// [`softmax_exp_body`] for `n = sums.len()` consecutive rows of `c` logits, each writing its
/// `e` into row `r` of `e` (rows of `stride` floats, zeros past `c`) and its sum into `sums`.
#[inline(always)]
fn softmax_group_body(z: &[f32], c: usize, e: &mut [f32], stride: usize, sums: &mut [f32]) {
    for (r, s) in sums.iter_mut().enumerate() {
        *s = softmax_exp_body(&z[r * c..(r + 1) * c], &mut e[r * stride..(r + 1) * stride]);
    }
}

/// One math routine on each lane, through the [`Scalar`] machine: the same operations as
/// the inline expansion, so the same bits.
#[inline(always)]
fn unary_lanes_body(op: UnOp, eps: f32, x: &mut [f32]) {
    for x in x {
        *x = vm::unary(&mut Scalar, op, *x, eps);
    }
}

#[inline(always)]
fn pow_lanes_body(a: &mut [f32], b: &[f32]) {
    for (a, &b) in a.iter_mut().zip(b) {
        *a = vm::binary(&mut Scalar, BinOp::Pow, *a, b);
    }
}

#[inline(always)]
fn scale_body(e: &[f32], k: f32, g: &mut [f32]) {
    for (g, &e) in g.iter_mut().zip(e) {
        *g = e * k;
    }
}

#[inline(always)]
fn scale_in_place_body(g: &mut [f32], k: f32) {
    for g in g {
        *g *= k;
    }
}

#[inline(always)]
fn grad_body(p: &[f32], s: &[f32], sigma: f32, inv_b: f32, g: &mut [f32]) {
    for ((g, &p), &s) in g.iter_mut().zip(p).zip(s) {
        *g = (s - p * sigma) * inv_b;
    }
}

/// The softmax entry points of a SIMD module, over its own `row_max` and `row_exp` and
/// compiled with its target features (`$features`): written once for the AVX2 and AVX-512
/// builds.
#[cfg(target_arch = "x86_64")]
macro_rules! softmax_drivers {
    ($features:literal) => {
        /// See the baseline [`super::softmax_exp_body`].
        #[target_feature(enable = $features)]
        pub fn softmax_exp_body(z: &[f32], e: &mut [f32]) -> f32 {
            let c = z.len();
            assert!(e.len() >= c);
            // SAFETY: `z` holds `c` floats and `e` at least `c`.
            let sum = unsafe { row_exp(z.as_ptr(), c, row_max(z.as_ptr(), c), e.as_mut_ptr()) };
            e[c..].fill(0.0);
            sum
        }

        /// See the baseline [`super::softmax_group_body`], but the lanes past `c` are left as
        /// they were (the general pass pads them). Every row's max first: they do not wait on
        /// each other, where each row's exp waits on its own max's reduction.
        #[target_feature(enable = $features)]
        pub fn softmax_group_body(z: &[f32], c: usize, e: &mut [f32], stride: usize, sums: &mut [f32]) {
            let n = sums.len();
            assert!(c > 0 && stride >= c && z.len() >= n * c && e.len() >= n * stride && n <= GROUP_ROWS);
            let mut m = [0f32; GROUP_ROWS];
            for (r, m) in m[..n].iter_mut().enumerate() {
                // SAFETY: row r lies inside `z` (asserted above).
                *m = unsafe { row_max(z.as_ptr().add(r * c), c) };
            }
            for (r, sum) in sums.iter_mut().enumerate() {
                let e = &mut e[r * stride..(r + 1) * stride];
                // SAFETY: row r lies inside `z`, and `e` holds `stride >= c` floats.
                *sum = unsafe { row_exp(z.as_ptr().add(r * c), c, m[r], e.as_mut_ptr()) };
            }
        }

        /// See the baseline [`super::softmax_rows_body`]. The max of the next row is computed
        /// before this row's exp, so its reduction overlaps this row's arithmetic instead of
        /// stalling the start of the next (~10 % at 100 classes).
        #[target_feature(enable = $features)]
        pub fn softmax_rows_body(z: &[f32], c: usize, g: &mut [f32], sums: &mut [f32]) {
            let n = sums.len();
            assert!(c > 0 && z.len() == n * c && g.len() == n * c);
            let (z, g) = (z.as_ptr(), g.as_mut_ptr());
            if n == 0 {
                return;
            }
            // SAFETY: every row `r < n` lies inside `z` and `g` (asserted above).
            let mut next = unsafe { row_max(z, c) };
            for (r, sum) in sums.iter_mut().enumerate() {
                let m = next;
                if r + 1 < n {
                    next = unsafe { row_max(z.add((r + 1) * c), c) };
                }
                *sum = unsafe { row_exp(z.add(r * c), c, m, g.add(r * c)) };
            }
        }
    };
}

/// The softmax pass on 8 lanes with AVX2 + FMA intrinsics: [`mathlib::exp`] restated step
/// for step for the arguments the softmax gives it, `z - max z <= 0` or NaN (same constants,
/// operations and order, so the same bits: the tests check it against `mathlib::exp` on
/// `Scalar`). Written out because LLVM vectorised the generic routine on 8-lane arrays only
/// sometimes, and then with 4 lanes.
#[cfg(target_arch = "x86_64")]
mod avx2_exp {
    use super::*;

    const W: usize = 8;

    /// `mathlib::exp` of `N` vectors of arguments `<= 0` (or NaN), the `N` chains emitted step
    /// by step: one chain is ~60 cycles deep, and interleaved chains let the core overlap them.
    /// Differences from the general routine, none of which changes a result on this domain:
    /// no upper clamp (the argument is at most 0); no lower clamp of the argument before the
    /// arithmetic, since lanes below it are set to 0 at the end whatever they computed; the
    /// rounding and the power of two share one addition of a magic constant.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub fn exp_nonpos<const N: usize>(x: [__m256; N]) -> [__m256; N] {
        // 1.5 * 2^23: adding it rounds to an integer (ties to even, as `round`) and leaves that
        // integer in the low mantissa bits.
        let magic = _mm256_set1_ps(12_582_912.0);
        let below = x.map(|x| _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(mathlib::EXP_LO)));
        let tm = x.map(|x| _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(mathlib::LOG2E)), magic));
        let n = tm.map(|tm| _mm256_sub_ps(tm, magic));
        let mut r: [__m256; N] = std::array::from_fn(|i| _mm256_fmadd_ps(n[i], _mm256_set1_ps(-mathlib::LN2_HI), x[i]));
        r = std::array::from_fn(|i| _mm256_fmadd_ps(n[i], _mm256_set1_ps(-mathlib::LN2_LO), r[i]));
        let c = &mathlib::EXP_POLY_F32;
        let mut p = [_mm256_set1_ps(c[c.len() - 1]); N];
        for &k in c[..c.len() - 1].iter().rev() {
            p = std::array::from_fn(|i| _mm256_fmadd_ps(p[i], r[i], _mm256_set1_ps(k)));
        }
        std::array::from_fn(|i| {
            // 2^n from the bits of n + magic. The routine computes (2p) 2^(n-1), which is the
            // same number: n >= -125 above the clamp, so neither product is subnormal.
            let e = _mm256_sub_epi32(_mm256_castps_si256(tm[i]), _mm256_set1_epi32(0x4B40_0000 - 127));
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e));
            _mm256_andnot_ps(below[i], _mm256_mul_ps(p[i], scale))
        })
    }

    /// The ragged end of a row of `c` logits, `full = c - c % W`: its lanes, `-inf` past the row
    /// (skipped by the max; exp 0), and the mask of lanes inside it. A masked load: a copy
    /// through a stack array stalled each wide load on the narrow stores before it (no store
    /// forwarding), ~15 % of a 10-class row.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tail(z: *const f32, c: usize) -> (__m256, __m256i) {
        let full = c - c % W;
        let inside =
            _mm256_cmpgt_epi32(_mm256_set1_epi32((c - full) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        // SAFETY: lanes past c are masked off and not read.
        let v = unsafe { _mm256_maskload_ps(z.add(full), inside) };
        (_mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), v, _mm256_castsi256_ps(inside)), inside)
    }

    /// The max of a row of `c` logits, skipping NaN: `max(v, m)` returns `m` when `v` is NaN,
    /// the compare-and-keep rule. (The order of the lanes cannot change the result: the max of
    /// numbers is exact, and whichever zero wins, `exp(z - m)` has the same bits.)
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn row_max(z: *const f32, c: usize) -> f32 {
        let full = c - c % W;
        // SAFETY (the loads): below `full <= c`, or masked.
        let (mut m0, _) = unsafe { tail(z, c) };
        let mut m1 = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut k = 0;
        while k + 2 * W <= full {
            unsafe {
                m0 = _mm256_max_ps(_mm256_loadu_ps(z.add(k)), m0);
                m1 = _mm256_max_ps(_mm256_loadu_ps(z.add(k + W)), m1);
            }
            k += 2 * W;
        }
        if k < full {
            m0 = _mm256_max_ps(unsafe { _mm256_loadu_ps(z.add(k)) }, m0);
        }
        let m = _mm256_max_ps(m0, m1);
        let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)))
    }

    /// `e[i] = exp(z[i] - m)` for the `c` lanes of a row; returns their sum. Four chains in
    /// the main loop, then pairs, then the last full vector and the ragged end.
    /// Padding lanes hold exp(-inf) = 0 unless m is -inf too (all logits -inf), when every lane
    /// is NaN anyway; they are not stored.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn row_exp(z: *const f32, c: usize, m: f32, e: *mut f32) -> f32 {
        let full = c - c % W;
        let mv = _mm256_set1_ps(m);
        // SAFETY (all loads and stores): below `full <= c`, or masked to the lanes below `c`.
        let (tail, inside) = unsafe { tail(z, c) };
        let arg = |k: usize| _mm256_sub_ps(unsafe { _mm256_loadu_ps(z.add(k)) }, mv);
        let store = |k: usize, v: __m256| unsafe { _mm256_storeu_ps(e.add(k), v) };
        let mut s = [_mm256_setzero_ps(); 4];
        let mut k = 0;
        while k + 4 * W <= full {
            let v = exp_nonpos([arg(k), arg(k + W), arg(k + 2 * W), arg(k + 3 * W)]);
            for (i, &v) in v.iter().enumerate() {
                store(k + i * W, v);
            }
            // One accumulator: four were spilled to the stack, and the reload sat on the
            // loop-carried chain.
            s[0] = _mm256_add_ps(s[0], _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3])));
            k += 4 * W;
        }
        while k + 2 * W <= full {
            let [a, b] = exp_nonpos([arg(k), arg(k + W)]);
            store(k, a);
            store(k + W, b);
            s[0] = _mm256_add_ps(s[0], a);
            s[1] = _mm256_add_ps(s[1], b);
            k += 2 * W;
        }
        // At most one full vector is left, and the ragged end.
        let ragged = |v: __m256| unsafe { _mm256_maskstore_ps(e.add(full), inside, v) };
        if k < full && full < c {
            let [a, b] = exp_nonpos([arg(k), _mm256_sub_ps(tail, mv)]);
            store(k, a);
            ragged(b);
            s[2] = _mm256_add_ps(s[2], a);
            s[3] = _mm256_add_ps(s[3], b);
        } else if k < full {
            let [a] = exp_nonpos([arg(k)]);
            store(k, a);
            s[2] = _mm256_add_ps(s[2], a);
        } else if full < c {
            let [b] = exp_nonpos([_mm256_sub_ps(tail, mv)]);
            ragged(b);
            s[3] = _mm256_add_ps(s[3], b);
        }
        let v = _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]));
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
    }

    softmax_drivers!("avx2,fma");
}

/// The softmax pass on 16 lanes with AVX-512: [`avx2_exp`] widened, the same operations lane
/// for lane (so the same `exp` bits), with the ragged end and the `exp` clamp in mask
/// registers. Chosen where the processor has AVX-512F: on a Zen 4 host the 8-lane pass ran out
/// of vector registers (16 with AVX2, 32 with AVX-512) and spilled its clamp masks in the main
/// loop. Only the sums' order differs from the 8-lane pass (16 partial sums, not 8).
#[cfg(target_arch = "x86_64")]
mod avx512_exp {
    use super::*;

    const W: usize = 16;

    /// [`avx2_exp::exp_nonpos`] on 16 lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub fn exp_nonpos<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        let magic = _mm512_set1_ps(12_582_912.0);
        let below = x.map(|x| _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(mathlib::EXP_LO)));
        let tm = x.map(|x| _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(mathlib::LOG2E)), magic));
        let n = tm.map(|tm| _mm512_sub_ps(tm, magic));
        let mut r: [__m512; N] = std::array::from_fn(|i| _mm512_fmadd_ps(n[i], _mm512_set1_ps(-mathlib::LN2_HI), x[i]));
        r = std::array::from_fn(|i| _mm512_fmadd_ps(n[i], _mm512_set1_ps(-mathlib::LN2_LO), r[i]));
        let c = &mathlib::EXP_POLY_F32;
        let mut p = [_mm512_set1_ps(c[c.len() - 1]); N];
        for &k in c[..c.len() - 1].iter().rev() {
            p = std::array::from_fn(|i| _mm512_fmadd_ps(p[i], r[i], _mm512_set1_ps(k)));
        }
        std::array::from_fn(|i| {
            let e = _mm512_sub_epi32(_mm512_castps_si512(tm[i]), _mm512_set1_epi32(0x4B40_0000 - 127));
            let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e));
            // Zero (+0, as `andnot` gives) where the argument is below the clamp.
            _mm512_maskz_mov_ps(!below[i], _mm512_mul_ps(p[i], scale))
        })
    }

    /// The ragged end of a row of `c` logits: its lanes, `-inf` past the row, and their mask.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tail(z: *const f32, c: usize) -> (__m512, __mmask16) {
        let full = c - c % W;
        let inside: __mmask16 = ((1u32 << (c - full)) - 1) as u16;
        // SAFETY: lanes past c are masked off and not read.
        (unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), inside, z.add(full)) }, inside)
    }

    /// [`avx2_exp`]'s `row_max` on 16 lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn row_max(z: *const f32, c: usize) -> f32 {
        let full = c - c % W;
        // SAFETY (the loads): below `full <= c`, or masked.
        let (mut m0, _) = unsafe { tail(z, c) };
        let mut m1 = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut k = 0;
        while k + 2 * W <= full {
            unsafe {
                m0 = _mm512_max_ps(_mm512_loadu_ps(z.add(k)), m0);
                m1 = _mm512_max_ps(_mm512_loadu_ps(z.add(k + W)), m1);
            }
            k += 2 * W;
        }
        if k < full {
            m0 = _mm512_max_ps(unsafe { _mm512_loadu_ps(z.add(k)) }, m0);
        }
        // `m1` never holds a NaN (the max keeps it on a NaN load); `m0` may, from the tail,
        // and the max with `m1` then takes `m1`'s lane. So the reduction meets no NaN, and the
        // order of its lanes is free.
        _mm512_reduce_max_ps(_mm512_max_ps(m0, m1))
    }

    /// [`avx2_exp`]'s `row_exp` on 16 lanes: four chains in the main loop, then pairs, then
    /// the last full vector and the ragged end.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn row_exp(z: *const f32, c: usize, m: f32, e: *mut f32) -> f32 {
        let full = c - c % W;
        let mv = _mm512_set1_ps(m);
        // SAFETY (all loads and stores): below `full <= c`, or masked to the lanes below `c`.
        let (tail, inside) = unsafe { tail(z, c) };
        let arg = |k: usize| _mm512_sub_ps(unsafe { _mm512_loadu_ps(z.add(k)) }, mv);
        let store = |k: usize, v: __m512| unsafe { _mm512_storeu_ps(e.add(k), v) };
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut k = 0;
        while k + 4 * W <= full {
            let v = exp_nonpos([arg(k), arg(k + W), arg(k + 2 * W), arg(k + 3 * W)]);
            for (i, &v) in v.iter().enumerate() {
                store(k + i * W, v);
            }
            s0 = _mm512_add_ps(s0, _mm512_add_ps(_mm512_add_ps(v[0], v[1]), _mm512_add_ps(v[2], v[3])));
            k += 4 * W;
        }
        while k + 2 * W <= full {
            let [a, b] = exp_nonpos([arg(k), arg(k + W)]);
            store(k, a);
            store(k + W, b);
            s0 = _mm512_add_ps(s0, a);
            s1 = _mm512_add_ps(s1, b);
            k += 2 * W;
        }
        let ragged = |v: __m512| unsafe { _mm512_mask_storeu_ps(e.add(full), inside, v) };
        if k < full && full < c {
            let [a, b] = exp_nonpos([arg(k), _mm512_sub_ps(tail, mv)]);
            store(k, a);
            ragged(b);
            s0 = _mm512_add_ps(s0, a);
            s1 = _mm512_add_ps(s1, b);
        } else if k < full {
            let [a] = exp_nonpos([arg(k)]);
            store(k, a);
            s0 = _mm512_add_ps(s0, a);
        } else if full < c {
            let [b] = exp_nonpos([_mm512_sub_ps(tail, mv)]);
            ragged(b);
            s1 = _mm512_add_ps(s1, b);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
    }

    softmax_drivers!("avx512f");
}

/// Declares each helper as an `extern "C"` entry point for the generated code, three times:
/// compiled for AVX2 + FMA, for AVX-512 (the same but for the 16-lane softmax pass), and for
/// the baseline target. `$body` does the work on slices.
macro_rules! helpers {
    ($($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? $body:block)*) => {
        /// The helpers compiled for AVX2 + FMA.
        #[cfg(target_arch = "x86_64")]
        mod avx2 {
            use super::avx2_exp::{softmax_exp_body, softmax_group_body, softmax_rows_body};
            use crate::backend::jit::Args;
            use crate::backend::jit_pass::avx2::{graph_rows_body, points_body, row_stride};
            use crate::backend::jit_pass::{GROUP_ROWS, LabelTerms, Program, Rows, RowsPlan};
            $(
                $(#[$m])*
                #[target_feature(enable = "avx2,fma")]
                pub unsafe extern "C" fn $name($($a: $t),*) $(-> $r)? $body
            )*
            /// This build's addresses.
            pub fn table() -> super::Helpers {
                super::Helpers { $($name: $name as *const () as usize,)* avx2: true, avx512_softmax: false }
            }
        }
        /// The helpers compiled for AVX-512 as well: the softmax pass and the general pass
        /// (`jit_pass::avx512`) on 16 lanes; the rest is the AVX2 code compiled with the wider
        /// registers allowed.
        #[cfg(target_arch = "x86_64")]
        mod avx512 {
            use super::avx512_exp::{softmax_exp_body, softmax_group_body, softmax_rows_body};
            use crate::backend::jit::Args;
            use crate::backend::jit_pass::avx512::{graph_rows_body, points_body, row_stride};
            use crate::backend::jit_pass::{GROUP_ROWS, LabelTerms, Program, Rows, RowsPlan};
            $(
                $(#[$m])*
                #[target_feature(enable = "avx2,fma,avx512f")]
                pub unsafe extern "C" fn $name($($a: $t),*) $(-> $r)? $body
            )*
            /// This build's addresses.
            pub fn table() -> super::Helpers {
                super::Helpers { $($name: $name as *const () as usize,)* avx2: true, avx512_softmax: true }
            }
        }
        /// The helpers for the baseline target.
        mod base {
            use super::{softmax_exp_body, softmax_group_body, softmax_rows_body};
            use crate::backend::jit::Args;
            use crate::backend::jit_pass::{GROUP_ROWS, LabelTerms, Program, Rows, RowsPlan, row_stride};
            use crate::backend::jit_pass::{graph_rows_body, points_body};
            $(
                $(#[$m])*
                pub unsafe extern "C" fn $name($($a: $t),*) $(-> $r)? $body
            )*
            /// This build's addresses.
            pub fn table() -> super::Helpers {
                super::Helpers { $($name: $name as *const () as usize,)* avx2: false, avx512_softmax: false }
            }
        }
    };
}

helpers! {
    /// See [`softmax_exp_body`]; `e` holds `e_len >= c` floats.
    fn softmax_exp(z: *const f32, c: u64, e: *mut f32, e_len: u64) -> f32 {
        // SAFETY: the kernel passes a row of `c` logits and its scratch row of `e_len` floats.
        let (z, e) = unsafe { (std::slice::from_raw_parts(z, c as usize), std::slice::from_raw_parts_mut(e, e_len as usize)) };
        softmax_exp_body(z, e)
    }
    /// `g[i] = e[i] * k`: the gradient of a row whose `s` is zero off its labels.
    fn scale(e: *const f32, c: u64, k: f32, g: *mut f32) {
        // SAFETY: `c` floats of scratch and of the row's gradient.
        let (e, g) = unsafe { (std::slice::from_raw_parts(e, c as usize), std::slice::from_raw_parts_mut(g, c as usize)) };
        super::scale_body(e, k, g)
    }
    /// [`softmax_exp_body`] for `n` consecutive rows of `c` logits, each writing its `e` into
    /// the matching row of `g` (no padding) and its sum into `sums[r]`.
    fn softmax_rows(z: *const f32, c: u64, n: u64, g: *mut f32, sums: *mut f32) {
        let (c, n) = (c as usize, n as usize);
        // SAFETY: `n` rows of `c` logits and of the gradient, and `n` sums.
        let (z, g, sums) = unsafe {
            (
                std::slice::from_raw_parts(z, n * c),
                std::slice::from_raw_parts_mut(g, n * c),
                std::slice::from_raw_parts_mut(sums, n),
            )
        };
        softmax_rows_body(z, c, g, sums)
    }
    /// `g[r][i] *= k[r]` for `n` consecutive rows of `c`.
    fn scale_rows(g: *mut f32, c: u64, n: u64, k: *const f32) {
        let (c, n) = (c as usize, n as usize);
        // SAFETY: `n` rows of the gradient and `n` factors.
        let (g, k) = unsafe { (std::slice::from_raw_parts_mut(g, n * c), std::slice::from_raw_parts(k, n)) };
        for (g, &k) in g.chunks_exact_mut(c).zip(k) {
            super::scale_in_place_body(g, k)
        }
    }
    /// `x[i] = op(x[i])` for `n` lanes, `op` being `UnOp::ALL[op]`: the quick tier calls the
    /// math library's routines here instead of expanding them inline (see `vm::is_routine`).
    fn unary_lanes(op: u32, eps: f32, x: *mut f32, n: u64) {
        // SAFETY: the kernel passes a stack slot of `n` floats.
        let x = unsafe { std::slice::from_raw_parts_mut(x, n as usize) };
        super::unary_lanes_body(crate::ir::UnOp::ALL[op as usize], eps, x)
    }
    /// `a[i] = pow(a[i], b[i])` for `n` lanes (the quick tier's out-of-line `pow`).
    fn pow_lanes(a: *mut f32, b: *const f32, n: u64) {
        // SAFETY: the kernel passes two stack slots of `n` floats.
        let (a, b) = unsafe { (std::slice::from_raw_parts_mut(a, n as usize), std::slice::from_raw_parts(b, n as usize)) };
        super::pow_lanes_body(a, b)
    }
    /// Rows `r0..r0 + n` (`n <= GROUP_ROWS`) of a kernel whose general pass is a columnar
    /// program, the whole row pipeline: the rows' softmax passes (`e = exp(z - m)` into the
    /// scratch rows, this build's `row_stride` floats each), the general pass over all their
    /// classes (`p = e / S` in place of `e`, `s` into the other scratch rows), the label
    /// classes' terms of all `n` rows in
    /// one program run (one row's alone was a chain of scalar code as long as the loss), and
    /// per row the loss and the gradient `(s - p sigma) / B`.
    fn general_rows(args: *const Args, r0: u64, n: u64, plan: *const RowsPlan) {
        use std::slice::{from_raw_parts, from_raw_parts_mut};
        // SAFETY: the kernel passes its argument block, whose pointers cover its rows and
        // whose scratch rows hold GROUP_ROWS rows of `row_stride` floats, `r0 + n <= rows`,
        // and its plan.
        let (a, plan) = unsafe { (&*args, &*plan) };
        let (c, r0, n) = (a.classes as usize, r0 as usize, n as usize);
        let stride = row_stride(c);
        assert!(n <= GROUP_ROWS);
        let (ps, ss) = unsafe {
            (from_raw_parts_mut(a.p_buf, GROUP_ROWS * stride), from_raw_parts_mut(a.s_buf, GROUP_ROWS * stride))
        };
        // Per row: the label classes (-1: none), 1 / S (S until inverted), and the sums of L
        // and s.
        let mut at = [[-1i64; 2]; GROUP_ROWS];
        let mut inv_s = [0f32; GROUP_ROWS];
        let mut sums = [(0f32, 0f32); GROUP_ROWS];
        // SAFETY: the rows' logits (see above).
        let z = unsafe { from_raw_parts(a.logits.add(r0 * c), n * c) };
        softmax_group_body(z, c, ps, stride, &mut inv_s[..n]);
        for i in 0..n {
            let r = r0 + i;
            inv_s[i] = 1.0 / inv_s[i];
            // SAFETY: row r's labels (see above).
            for (k, labels) in at[i].iter_mut().zip([a.labels, a.labels_b]) {
                if !labels.is_null() {
                    *k = unsafe { *labels.add(r) } as i64;
                }
            }
        }
        // SAFETY: the rows' dense targets (see above).
        let y = if a.dense.is_null() { None } else { Some(unsafe { from_raw_parts(a.dense.add(r0 * c), n * c) }) };
        let rows = Rows { p: ps, s: ss, stride, y, c, inv_s: &inv_s[..n], labels: &at[..n] };
        graph_rows_body(&plan.pass, rows, &mut sums[..n]);
        // The label classes at their own y; s there is written after the pass, which left it.
        // Per point (up to two per row): its y and p, and L and s there.
        let [mut ys, mut pts, mut ls, mut lss] = [[0f32; 2 * GROUP_ROWS]; 4];
        match &plan.labels {
            LabelTerms::None => {}
            LabelTerms::Labels(on) => {
                for i in 0..n {
                    pts[i] = ps[i * stride + at[i][0] as usize];
                }
                points_body(on, None, &pts[..n], &mut ls[..n], &mut lss[..n]);
                for i in 0..n {
                    sums[i] = (sums[i].0 + ls[i], sums[i].1 + lss[i]);
                    ss[i * stride + at[i][0] as usize] = lss[i];
                }
            }
            &LabelTerms::Mixup { ref general, keep, y_off } => {
                // Points 0..n at each row's first label, n..2n at its second.
                for i in 0..n {
                    // SAFETY: row r0 + i's mixing weight.
                    let lam = unsafe { *a.lam.add(r0 + i) };
                    let [ka, kb] = at[i];
                    let (la, lb) = (keep * lam, keep * (1.0 - lam));
                    ys[i] = if ka == kb { la + lb + y_off } else { la + y_off };
                    ys[n + i] = lb + y_off;
                    let p = &ps[i * stride..];
                    (pts[i], pts[n + i]) = (p[ka as usize], p[kb as usize]);
                }
                let m = 2 * n;
                points_body(general, Some(&ys[..m]), &pts[..m], &mut ls[..m], &mut lss[..m]);
                for i in 0..n {
                    let [ka, kb] = at[i];
                    let (lb, sb) = if ka == kb { (0.0, 0.0) } else { (ls[n + i], lss[n + i]) };
                    sums[i] = (sums[i].0 + ls[i] + lb, sums[i].1 + lss[i] + sb);
                    // b first: when both labels are one class, a's value wins.
                    ss[i * stride + kb as usize] = sb;
                    ss[i * stride + ka as usize] = lss[i];
                }
            }
        }
        for (i, &(l, sigma)) in sums[..n].iter().enumerate() {
            let r = r0 + i;
            // SAFETY: row r's loss and gradient (see above).
            let g = unsafe {
                *a.row_loss.add(r) = l;
                from_raw_parts_mut(a.grad.add(r * c), c)
            };
            let row = i * stride..i * stride + c;
            super::grad_body(&ps[row.clone()], &ss[row], sigma, a.inv_batch, g);
        }
    }
    /// Rows `r0..r0 + n` (`n <= GROUP_ROWS`) of a label kernel whose loss vanishes off the
    /// label (CE, A2, ... without smoothing), the whole row pipeline: the rows' softmax passes
    /// write `e = exp(z - m)` into their gradient rows; the on-target program `on` runs once
    /// for the `n` labels' `p = e / S`; each gradient row is its `e` scaled by
    /// `-sigma / (S B)` (off the label `s = 0`, so `sigma = s` at the label), and at the label
    /// `(s - p sigma) / B`: the operations, in their order, of the Cranelift code the baseline
    /// build keeps (`Emitter::label_rows` in jit.rs), with the label terms of 16 rows in one
    /// program run (16 lanes with AVX-512) instead of two 4-lane vectors per 8 rows.
    fn label_rows(args: *const Args, r0: u64, n: u64, on: *const Program) {
        use std::slice::{from_raw_parts, from_raw_parts_mut};
        // SAFETY: the kernel passes its argument block, whose pointers cover its rows,
        // `r0 + n <= rows`, and its on-target program.
        let (a, on) = unsafe { (&*args, &*on) };
        let (c, r0, n) = (a.classes as usize, r0 as usize, n as usize);
        assert!(n <= GROUP_ROWS);
        // SAFETY: the rows' logits and gradient (see above).
        let (z, g) = unsafe { (from_raw_parts(a.logits.add(r0 * c), n * c), from_raw_parts_mut(a.grad.add(r0 * c), n * c)) };
        // Per row: S (then 1 / S), the label, p at the label, and L and s there.
        let mut inv_s = [0f32; GROUP_ROWS];
        let mut at = [0usize; GROUP_ROWS];
        let [mut pts, mut ls, mut ss] = [[0f32; GROUP_ROWS]; 3];
        softmax_rows_body(z, c, g, &mut inv_s[..n]);
        for i in 0..n {
            // SAFETY: row r0 + i's label, which the contract checked is below `c`.
            at[i] = unsafe { *a.labels.add(r0 + i) } as usize;
            inv_s[i] = 1.0 / inv_s[i];
            pts[i] = g[i * c + at[i]] * inv_s[i];
        }
        points_body(on, None, &pts[..n], &mut ls[..n], &mut ss[..n]);
        for i in 0..n {
            let sigma = ss[i];
            let row = &mut g[i * c..(i + 1) * c];
            super::scale_in_place_body(row, -(inv_s[i] * sigma * a.inv_batch));
            row[at[i]] = (sigma - pts[i] * sigma) * a.inv_batch;
            // SAFETY: row r0 + i's loss (see above).
            unsafe { *a.row_loss.add(r0 + i) = ls[i] };
        }
    }
    /// `L` and `s` of a program (its `y` folded in) at `n` points `p`, into `l` and `s`.
    fn graph_points(prog: *const Program, p: *const f32, n: u64, l: *mut f32, s: *mut f32) {
        let n = n as usize;
        // SAFETY: the kernel passes its program and three stack slots of `n` floats.
        let (prog, p, l, s) = unsafe {
            (&*prog, std::slice::from_raw_parts(p, n), std::slice::from_raw_parts_mut(l, n),
             std::slice::from_raw_parts_mut(s, n))
        };
        points_body(prog, None, p, l, s)
    }
    /// `g[i] = (s[i] - p[i] sigma) inv_b`.
    fn grad(p: *const f32, s: *const f32, c: u64, sigma: f32, inv_b: f32, g: *mut f32) {
        // SAFETY: `c` floats of each scratch row and of the row's gradient.
        let (p, s, g) = unsafe {
            (
                std::slice::from_raw_parts(p, c as usize),
                std::slice::from_raw_parts(s, c as usize),
                std::slice::from_raw_parts_mut(g, c as usize),
            )
        };
        super::grad_body(p, s, sigma, inv_b, g)
    }
}

/// The helpers' addresses for this processor (one field per helper: the `helpers!` macro
/// fills them by name).
#[derive(Clone, Copy, Debug)]
pub struct Helpers {
    pub softmax_exp: usize,
    pub scale: usize,
    pub softmax_rows: usize,
    pub scale_rows: usize,
    pub grad: usize,
    pub unary_lanes: usize,
    pub pow_lanes: usize,
    pub general_rows: usize,
    pub label_rows: usize,
    pub graph_points: usize,
    /// Whether these are the AVX2 + FMA builds.
    pub avx2: bool,
    /// Whether these are the AVX-512 builds (whose softmax and general passes have 16 lanes).
    pub avx512_softmax: bool,
}

impl Helpers {
    /// The AVX2 + FMA builds when the processor has both (with the AVX-512 passes where it
    /// has AVX-512F too, unless `LOSSC_NO_AVX512` is set: the benchmarks' AVX2 baseline on
    /// the same host), else the baseline.
    pub fn for_host() -> Helpers {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            let wide = has_avx512() && std::env::var_os("LOSSC_NO_AVX512").is_none_or(|v| v.is_empty());
            return if wide { avx512::table() } else { avx2::table() };
        }
        Helpers::baseline()
    }

    /// The AVX2 + FMA builds, where the processor has both.
    pub fn avx2() -> Option<Helpers> {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            return Some(avx2::table());
        }
        None
    }

    /// The baseline builds, for any processor.
    pub fn baseline() -> Helpers {
        base::table()
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a vector `exp` (`exp32`: 32 lanes at a time) against `mathlib::exp`, bit for bit,
    /// on its domain: a sweep of f32 from -104 to 0, and -0, -inf, NaN, the most negative f32
    /// and the clamp.
    fn exp_gives_the_math_librarys_bits(exp32: impl Fn(&[f32], &mut [f32; 32])) {
        let mut xs: Vec<f32> = (0..2_000_000).map(|i| -104.0 * i as f32 / 2e6).collect();
        xs.extend([0.0, -0.0, f32::NAN, f32::NEG_INFINITY, f32::MIN, -1e-30, mathlib::EXP_LO]);
        while !xs.len().is_multiple_of(32) {
            xs.push(-1.0);
        }
        for ch in xs.chunks_exact(32) {
            let mut out = [0f32; 32];
            exp32(ch, &mut out);
            for (x, got) in ch.iter().zip(out) {
                let want = mathlib::exp(&mut Scalar, *x);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "exp({x}): {got} vs {want}"
                );
            }
        }
    }

    /// The AVX2 `exp`, four chains of 8 lanes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_exp_is_the_math_librarys_exp() {
        if !has_avx2_fma() {
            println!("SKIPPED: this processor has no AVX2 + FMA");
            return;
        }
        // SAFETY: AVX2 and FMA are present (checked above); the slices hold 32 floats.
        exp_gives_the_math_librarys_bits(|x, out| unsafe {
            let x: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
            for (i, v) in avx2_exp::exp_nonpos(x).into_iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), v);
            }
        });
    }

    /// The AVX-512 `exp`, two chains of 16 lanes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_exp_is_the_math_librarys_exp() {
        if !has_avx512() {
            println!("SKIPPED: this processor has no AVX-512F");
            return;
        }
        // SAFETY: AVX-512F is present (checked above); the slices hold 32 floats.
        exp_gives_the_math_librarys_bits(|x, out| unsafe {
            let x: [__m512; 2] = std::array::from_fn(|i| _mm512_loadu_ps(x.as_ptr().add(16 * i)));
            for (i, v) in avx512_exp::exp_nonpos(x).into_iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(16 * i), v);
            }
        });
    }

    /// Every build against the definition: the same `exp` bits as `mathlib::exp`, the max,
    /// the zeroed tail, and a NaN logit poisoning the sum; one row at a time and in groups.
    #[test]
    fn softmax_exp_matches_its_definition() {
        let mut builds = vec![base::softmax_exp as unsafe extern "C" fn(*const f32, u64, *mut f32, u64) -> f32];
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            builds.push(avx2::softmax_exp);
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            builds.push(avx512::softmax_exp);
        } else {
            println!("SKIPPED (AVX-512 build): this processor has no AVX-512F");
        }
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32
        };
        for c in [1usize, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 65, 100, 1000] {
            for scale in [1.0f32, 30.0, 200.0] {
                let z: Vec<f32> = (0..c).map(|_| (next() - 0.5) * scale).collect();
                let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for f in &builds {
                    let mut e = vec![f32::NAN; c + 8];
                    // SAFETY: z holds c floats and e holds c + 8.
                    let sum = unsafe { f(z.as_ptr(), c as u64, e.as_mut_ptr(), e.len() as u64) };
                    for i in 0..c {
                        assert_eq!(e[i].to_bits(), mathlib::exp(&mut Scalar, z[i] - m).to_bits(), "c={c} i={i}");
                    }
                    assert!(e[c..].iter().all(|&v| v == 0.0));
                    let want: f64 = e[..c].iter().map(|&v| v as f64).sum();
                    assert!((sum as f64 - want).abs() <= 1e-6 * want, "c={c}: {sum} vs {want}");
                }
            }
        }
        // The row form (the next row's max computed ahead of this row's exp), every build.
        let mut rows = vec![base::softmax_rows as unsafe extern "C" fn(*const f32, u64, u64, *mut f32, *mut f32)];
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            rows.push(avx2::softmax_rows);
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            rows.push(avx512::softmax_rows);
        }
        for c in [1usize, 5, 8, 13, 15, 16, 17, 24, 31, 32, 33, 47, 48, 63, 64, 65, 80, 96, 100, 112] {
            let n = 5;
            let z: Vec<f32> = (0..n * c).map(|_| (next() - 0.5) * 40.0).collect();
            for f in &rows {
                let (mut g, mut sums) = (vec![f32::NAN; n * c], vec![f32::NAN; n]);
                // SAFETY: n rows of c floats each in z and g, n sums.
                unsafe { f(z.as_ptr(), c as u64, n as u64, g.as_mut_ptr(), sums.as_mut_ptr()) };
                for (r, (z, g)) in z.chunks(c).zip(g.chunks(c)).enumerate() {
                    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    for i in 0..c {
                        assert_eq!(g[i].to_bits(), mathlib::exp(&mut Scalar, z[i] - m).to_bits(), "c={c} r={r} i={i}");
                    }
                    let want: f64 = g.iter().map(|&v| v as f64).sum();
                    assert!((sums[r] as f64 - want).abs() <= 1e-6 * want, "c={c} r={r}: {} vs {want}", sums[r]);
                }
            }
        }
        let z = [1.0, f32::NAN, 2.0];
        for f in &builds {
            let mut e = [0f32; 8];
            // SAFETY: as above.
            let sum = unsafe { f(z.as_ptr(), 3, e.as_mut_ptr(), 8) };
            assert!(sum.is_nan() && e[1].is_nan() && e[2] == 1.0);
        }
    }
}
