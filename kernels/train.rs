//! The training runtime's GPU kernels, written once for WGSL and CUDA C.
//!
//! Each row is one kernel: its storage buffers (binding order), its scalar parameters and a
//! body in the common subset of WGSL and C++ that `runtime/src/kernels.rs` wraps for either
//! language (`const`/`let`/`var` become `constexpr auto`/`const auto`/`auto`; `select`,
//! `sigmoid`, `reduce_sum` and `bitcast` are defined in both preludes). A row written as a
//! macro (`conv_forward!(4)`) is one kernel per value of a constant of its body. Bodies see
//! `gid` (this thread's global index), `lid` (its index in the workgroup of 256), `wg` (the
//! workgroup's index), `nthreads` and `nwgs`, and loop over their work grid-stride, so any
//! dispatch size covers it.
//!
//! Every tensor carries a leading model axis of K (the population): activations are
//! `[K, C, N, H*W]`, parameters `[K, ...]`. A buffer shared by all models (the input batch, a
//! dropout mask) has model stride 0. Thread `e` of an element-wise kernel handles element `e`
//! of the whole `[K, ...]` tensor, so K never appears as a loop.

/// How a kernel uses a storage buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only f32.
    Read,
    /// Read-only u32 (labels).
    ReadU32,
    /// Written (and possibly read) f32.
    Write,
}

/// One kernel: name, buffers, parameters (`name` is u32, `name:f` is f32), body.
pub struct Kernel {
    pub name: &'static str,
    pub buffers: &'static [(&'static str, Access)],
    pub params: &'static [&'static str],
    pub body: &'static str,
}

use Access::{Read as R, ReadU32 as U, Write as W};

/// Channels a thread of `conv_forward` (output) and `conv_backward_data` (input) computes, and
/// output channels a workgroup of `conv_backward_filter`: `CB` in the kernels' text, where both
/// wrappers define it. Its weights are a `zeros9`, the weight gradient's sums a `zeros72`.
pub const CHANNEL_BLOCK: usize = 8;
/// The most images such a thread computes (`IB`, 1, 2 or 4, an entry point each): each weight
/// it loads then serves that many images. Its accumulators are a `zeros32`.
pub const IMAGE_BLOCK: usize = 4;
const _: () = assert!(CHANNEL_BLOCK <= 9 && CHANNEL_BLOCK * IMAGE_BLOCK <= 32 && CHANNEL_BLOCK * 9 <= 72);

/// y[k, co, i, oy, ox] = sum over ci, ky, kx of w[k, co, ci, ky, kx] x[k, ci, i, iy, ix]:
/// a thread per output pixel, block of CB output channels and block of IB images (`total`
/// counts those), so each weight it loads serves IB images and each input value CB channels.
/// A warp's threads are neighbouring pixels: its loads of x are contiguous, its loads of w
/// one address. IB is a constant of the body, and the table has an entry point for each of 1,
/// 2 and 4 (`conv_forward_4`): a thread of one image then issues the loop of one.
macro_rules! conv_forward {
    ($ib:literal) => {
        Kernel {
            name: concat!("conv_forward_", $ib),
            buffers: &[("w", R), ("x", R), ("y", W)],
            params: &["total", "n", "cin", "cout", "ks", "stride", "pad", "h", "w", "oh", "ow", "xs"],
            body: concat!(
                "\n    const IB = ",
                $ib,
                "u;",
                r#"
    let blocks = (p.cout + CB - 1u) / CB;
    let iblocks = (p.n + IB - 1u) / IB;
    let kk = p.cin * p.ks * p.ks;
    let plane = p.oh * p.ow;
    let hw = p.h * p.w;
    for (var e = gid; e < p.total; e += nthreads) {
        let ox = e % p.ow;
        let t0 = e / p.ow;
        let oy = t0 % p.oh;
        let t1 = t0 / p.oh;
        let i0 = (t1 % iblocks) * IB;
        let t2 = t1 / iblocks;
        let c0 = (t2 % blocks) * CB;
        let k = t2 / blocks;
        let nc = min(CB, p.cout - c0);
        let ni = min(IB, p.n - i0);
        let wbase = (k * p.cout + c0) * kk;
        // acc[q * CB + c]: image i0 + q, channel c0 + c.
        var acc = zeros32();
        var wv = zeros9();
        // The taps inside the input: ky in [ky0, ky1), kx in [kx0, kx1).
        let y0 = i32(oy * p.stride) - i32(p.pad);
        let x0 = i32(ox * p.stride) - i32(p.pad);
        let ky0 = u32(max(-y0, 0));
        let ky1 = u32(min(max(i32(p.h) - y0, 0), i32(p.ks)));
        let kx0 = u32(max(-x0, 0));
        let kx1 = u32(min(max(i32(p.w) - x0, 0), i32(p.ks)));
        // Channel c's weights lie wo[c] past channel c0's; channels past the block's last
        // repeat it (their sums are not stored), so the loads need no conditions.
        var wo = words9();
        for (var c = 0u; c < CB; c++) { wo[c] = min(c, nc - 1u) * kk; }
        for (var ci = 0u; ci < p.cin; ci++) {
            let xbase = k * p.xs + (ci * p.n + i0) * hw;
            for (var ky = ky0; ky < ky1; ky++) {
                let row = xbase + u32(y0 + i32(ky)) * p.w;
                for (var kx = kx0; kx < kx1; kx++) {
                    let wi = wbase + (ci * p.ks + ky) * p.ks + kx;
                    for (var c = 0u; c < CB; c++) { wv[c] = w[wi + wo[c]]; }
                    let xi = row + u32(x0 + i32(kx));
                    for (var q = 0u; q < IB; q++) {
                        if (q < ni) {
                            let xv = x[xi + q * hw];
                            for (var c = 0u; c < CB; c++) { acc[q * CB + c] += wv[c] * xv; }
                        }
                    }
                }
            }
        }
        for (var q = 0u; q < IB; q++) {
            for (var c = 0u; c < CB; c++) {
                if (q < ni && c < nc) {
                    y[((k * p.cout + c0 + c) * p.n + i0 + q) * plane + oy * p.ow + ox] = acc[q * CB + c];
                }
            }
        }
    }"#
            ),
        }
    };
}

/// dx[k, ci, i, iy, ix] = sum over co and the taps that read (iy, ix) of w gy: a thread per
/// input pixel, block of CB input channels and block of IB images (`total` counts those), as
/// in `conv_forward!`.
macro_rules! conv_backward_data {
    ($ib:literal) => {
        Kernel {
            name: concat!("conv_backward_data_", $ib),
            buffers: &[("w", R), ("gy", R), ("dx", W)],
            params: &["total", "n", "cin", "cout", "ks", "stride", "pad", "h", "w", "oh", "ow"],
            body: concat!("\n    const IB = ", $ib, "u;", r#"
    let blocks = (p.cin + CB - 1u) / CB;
    let iblocks = (p.n + IB - 1u) / IB;
    let taps = p.ks * p.ks;
    let plane = p.oh * p.ow;
    let hw = p.h * p.w;
    for (var e = gid; e < p.total; e += nthreads) {
        let ix = e % p.w;
        let t0 = e / p.w;
        let iy = t0 % p.h;
        let t1 = t0 / p.h;
        let i0 = (t1 % iblocks) * IB;
        let t2 = t1 / iblocks;
        let c0 = (t2 % blocks) * CB;
        let k = t2 / blocks;
        let nc = min(CB, p.cin - c0);
        let ni = min(IB, p.n - i0);
        var acc = zeros32();
        var wv = zeros9();
        // Channel c's weights lie wo[c] past channel c0's; channels past the block's last
        // repeat it, as in `conv_forward`.
        var wo = words9();
        for (var c = 0u; c < CB; c++) { wo[c] = min(c, nc - 1u) * taps; }
        let wstep = p.cin * taps;
        let gstep = p.n * plane;
        for (var ky = 0u; ky < p.ks; ky++) {
            let ty = i32(iy + p.pad) - i32(ky);
            if (ty < 0 || ty % i32(p.stride) != 0) { continue; }
            let oy = u32(ty) / p.stride;
            if (oy >= p.oh) { continue; }
            for (var kx = 0u; kx < p.ks; kx++) {
                let tx = i32(ix + p.pad) - i32(kx);
                if (tx < 0 || tx % i32(p.stride) != 0) { continue; }
                let ox = u32(tx) / p.stride;
                if (ox >= p.ow) { continue; }
                // Output channel co's weights and gradient: wi and gi step by a channel each.
                var wi = ((k * p.cout * p.cin + c0) * p.ks + ky) * p.ks + kx;
                var gi = (k * p.cout * p.n + i0) * plane + oy * p.ow + ox;
                for (var co = 0u; co < p.cout; co++) {
                    for (var c = 0u; c < CB; c++) { wv[c] = w[wi + wo[c]]; }
                    for (var q = 0u; q < IB; q++) {
                        if (q < ni) {
                            let g = gy[gi + q * plane];
                            for (var c = 0u; c < CB; c++) { acc[q * CB + c] += wv[c] * g; }
                        }
                    }
                    wi += wstep;
                    gi += gstep;
                }
            }
        }
        for (var q = 0u; q < IB; q++) {
            for (var c = 0u; c < CB; c++) {
                if (q < ni && c < nc) { dx[((k * p.cin + c0 + c) * p.n + i0 + q) * hw + iy * p.w + ix] = acc[q * CB + c]; }
            }
        }
    }"#),
        }
    };
}

pub const KERNELS: &[Kernel] = &[
    conv_forward!(1),
    conv_forward!(2),
    conv_forward!(4),
    conv_backward_data!(1),
    conv_backward_data!(2),
    conv_backward_data!(4),
    // dw[k, co, ci, ky, kx] += sum over i, oy, ox of gy x: one workgroup per (k, block of CB
    // output channels, input channel, part of the pixels), all taps at once (a kernel of at
    // most 3x3), so that each x value is loaded once for CB weights and each gy value once for
    // nine. With one part the workgroup adds its sums into dw; with several it writes them to
    // `part` (CB * 9 a workgroup), which `conv_filter_merge` adds up.
    Kernel {
        name: "conv_backward_filter",
        buffers: &[("x", R), ("gy", R), ("dw", W), ("part", W)],
        params: &["groups", "n", "cin", "cout", "ks", "stride", "pad", "h", "w", "oh", "ow", "xs", "parts"],
        body: r#"
    let plane = p.oh * p.ow;
    let np = p.n * plane;
    let chunk = (np + p.parts - 1u) / p.parts;
    let di = 256u / plane;
    let dy = (256u % plane) / p.ow;
    let dx = 256u % p.ow;
    let blocks = (p.cout + CB - 1u) / CB;
    let xplane = p.n * p.h * p.w;
    let taps = p.ks * p.ks;
    for (var e = wg; e < p.groups; e += nwgs) {
        let lo = (e % p.parts) * chunk;
        let hi = min(lo + chunk, np);
        let t0 = e / p.parts;
        let ci = t0 % p.cin;
        let t1 = t0 / p.cin;
        let co = (t1 % blocks) * CB;
        let k = t1 / blocks;
        let nc = min(CB, p.cout - co);
        let gbase = (k * p.cout + co) * np;
        let xbase = k * p.xs + ci * xplane;
        // Channel o's gradient lies go[o] past channel co's; channels past the block's last
        // repeat it (their sums are not stored), so the loads need no conditions.
        var go = words9();
        for (var o = 0u; o < CB; o++) { go[o] = min(o, nc - 1u) * np; }
        // acc[o * 9 + tap]: output channel co + o, tap (ky, kx) = (tap / 3, tap % 3).
        var acc = zeros72();
        var g = zeros9();
        // Pixel j = (i, oy, ox) steps by 256: its coordinates advance by (di, dy, dx) with
        // carries, not by a division each step.
        let j0 = lo + lid;
        var ox = j0 % p.ow;
        var oy = (j0 / p.ow) % p.oh;
        var i = j0 / plane;
        for (var j = j0; j < hi; j += 256u) {
            for (var o = 0u; o < CB; o++) { g[o] = gy[gbase + go[o] + j]; }
            let y0 = i32(oy * p.stride) - i32(p.pad);
            let x0 = i32(ox * p.stride) - i32(p.pad);
            let ibase = xbase + i * p.h * p.w;
            for (var ky = 0u; ky < 3u; ky++) {
                let iy = y0 + i32(ky);
                let row_in = ky < p.ks && iy >= 0 && iy < i32(p.h);
                // The index of (iy, x0), signed: a tap's load then takes its offset kx as an
                // immediate.
                let row = i32(ibase) + iy * i32(p.w) + x0;
                for (var kx = 0u; kx < 3u; kx++) {
                    let ix = x0 + i32(kx);
                    if (row_in && kx < p.ks && ix >= 0 && ix < i32(p.w)) {
                        let xv = x[row + i32(kx)];
                        for (var o = 0u; o < CB; o++) { acc[o * 9u + ky * 3u + kx] += g[o] * xv; }
                    }
                }
            }
            ox += dx;
            if (ox >= p.ow) {
                ox -= p.ow;
                oy += 1u;
            }
            oy += dy;
            if (oy >= p.oh) {
                oy -= p.oh;
                i += 1u;
            }
            i += di;
        }
        // Thread o * 9 + tap stores the sum of output channel co + o, tap (tap / 3, tap % 3).
        reduce_sum72(acc, lid);
        let o = lid / 9u;
        let tap = lid % 9u;
        let ky = tap / 3u;
        let kx = tap % 3u;
        if (lid < CB * 9u && p.parts > 1u) {
            part[(e * CB + o) * 9u + tap] = sum72[lid];
        } else if (lid < CB * 9u && o < nc && ky < p.ks && kx < p.ks) {
            dw[((k * p.cout + co + o) * p.cin + ci) * taps + ky * p.ks + kx] += sum72[lid];
        }
    }"#,
    },
    // dw += the parts' sums of `conv_backward_filter`: a thread per weight.
    Kernel {
        name: "conv_filter_merge",
        buffers: &[("part", R), ("dw", W)],
        params: &["total", "cin", "cout", "ks", "parts"],
        body: r#"
    let taps = p.ks * p.ks;
    let blocks = (p.cout + CB - 1u) / CB;
    for (var e = gid; e < p.total; e += nthreads) {
        let t = e % taps;
        let t0 = e / taps;
        let ci = t0 % p.cin;
        let t1 = t0 / p.cin;
        let co = t1 % p.cout;
        let k = t1 / p.cout;
        // The workgroup of (model, block of output channels, input channel), and the sum's
        // place in its CB * 9.
        let g = (k * blocks + co / CB) * p.cin + ci;
        let slot = (co % CB) * 9u + (t / p.ks) * 3u + t % p.ks;
        var s = 0.0f;
        for (var q = 0u; q < p.parts; q++) { s += part[(g * p.parts + q) * CB * 9u + slot]; }
        dw[e] += s;
    }"#,
    },
    // Batch statistics of each (model, channel), over `parts` workgroups each: a part's count,
    // mean and sum of squared deviations (two passes), for `bn_merge`.
    Kernel {
        name: "bn_stats",
        buffers: &[("x", R), ("part", W)],
        params: &["groups", "len", "parts"],
        body: r#"
    let chunk = (p.len + p.parts - 1u) / p.parts;
    for (var e = wg; e < p.groups; e += nwgs) {
        let lo = (e % p.parts) * chunk;
        let hi = min(lo + chunk, p.len);
        let base = (e / p.parts) * p.len;
        let count = f32(max(hi, lo) - lo);
        var s = 0.0f;
        for (var j = lo + lid; j < hi; j += 256u) { s += x[base + j]; }
        let mu = reduce_sum(s, lid) / max(count, 1.0f);
        var q = 0.0f;
        for (var j = lo + lid; j < hi; j += 256u) {
            let d = x[base + j] - mu;
            q += d * d;
        }
        let m2 = reduce_sum(q, lid);
        if (lid == 0u) {
            part[3u * e] = count;
            part[3u * e + 1u] = mu;
            part[3u * e + 2u] = m2;
        }
    }"#,
    },
    // The parts of `bn_stats` combined (Chan et al.'s pairwise update): mean and
    // 1/sqrt(var + eps), and the running statistics' update. A thread per (model, channel).
    Kernel {
        name: "bn_merge",
        buffers: &[("part", R), ("mean", W), ("inv", W), ("rmean", W), ("rvar", W)],
        params: &["total", "parts", "momentum:f", "eps:f"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        let b = 3u * e * p.parts;
        var n = part[b];
        var mu = part[b + 1u];
        var m2 = part[b + 2u];
        for (var q = 1u; q < p.parts; q++) {
            let nb = part[b + 3u * q];
            if (nb > 0.0f) {
                let d = part[b + 3u * q + 1u] - mu;
                let nn = n + nb;
                mu += d * nb / nn;
                m2 += part[b + 3u * q + 2u] + d * d * n * nb / nn;
                n = nn;
            }
        }
        let va = m2 / n;
        mean[e] = mu;
        inv[e] = 1.0f / sqrt(va + p.eps);
        rmean[e] = p.momentum * rmean[e] + (1.0f - p.momentum) * mu;
        rvar[e] = p.momentum * rvar[e] + (1.0f - p.momentum) * va;
    }"#,
    },
    // Evaluation: the running statistics as (mean, 1/sqrt(var + eps)).
    Kernel {
        name: "bn_running",
        buffers: &[("rmean", R), ("rvar", R), ("mean", W), ("inv", W)],
        params: &["total", "eps:f"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        mean[e] = rmean[e];
        inv[e] = 1.0f / sqrt(rvar[e] + p.eps);
    }"#,
    },
    // z = gamma (x - mean) inv + beta, then swish; training keeps xhat (the backward passes
    // compute z and sigmoid(z) again from it: an exp a value costs less than writing and
    // twice reading a tensor of sigmoids).
    Kernel {
        name: "bn_apply",
        buffers: &[("x", R), ("mean", R), ("inv", R), ("gamma", R), ("beta", R), ("y", W), ("xhat", W)],
        params: &["total", "len", "swish", "train"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        let kc = e / p.len;
        let xh = (x[e] - mean[kc]) * inv[kc];
        let z = gamma[kc] * xh + beta[kc];
        var out = z;
        if (p.swish != 0u) { out = z * sigmoid(z); }
        if (p.train != 0u) { xhat[e] = xh; }
        y[e] = out;
    }"#,
    },
    // Backward, pass 1: per (model, channel) sum dz and sum dz xhat, over `parts` workgroups
    // each, for `bn_sums_merge`.
    Kernel {
        name: "bn_backward_sums",
        buffers: &[("gy", R), ("xhat", R), ("gamma", R), ("beta", R), ("part", W)],
        params: &["groups", "len", "swish", "parts"],
        body: r#"
    let chunk = (p.len + p.parts - 1u) / p.parts;
    for (var e = wg; e < p.groups; e += nwgs) {
        let kc = e / p.parts;
        let lo = (e % p.parts) * chunk;
        let hi = min(lo + chunk, p.len);
        let base = kc * p.len;
        var sg = 0.0f;
        var sgx = 0.0f;
        for (var j = lo + lid; j < hi; j += 256u) {
            let xh = xhat[base + j];
            var dz = gy[base + j];
            if (p.swish != 0u) {
                let z = gamma[kc] * xh + beta[kc];
                let s = sigmoid(z);
                dz = dz * (s + z * s * (1.0f - s));
            }
            sg += dz;
            sgx += dz * xh;
        }
        let tg = reduce_sum(sg, lid);
        let tgx = reduce_sum(sgx, lid);
        if (lid == 0u) {
            part[2u * e] = tg;
            part[2u * e + 1u] = tgx;
        }
    }"#,
    },
    // The parts of `bn_backward_sums` added up into `sums` and into dbeta, dgamma. A thread per
    // (model, channel).
    Kernel {
        name: "bn_sums_merge",
        buffers: &[("part", R), ("sums", W), ("dgamma", W), ("dbeta", W)],
        params: &["total", "parts"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        let b = 2u * e * p.parts;
        var tg = part[b];
        var tgx = part[b + 1u];
        for (var q = 1u; q < p.parts; q++) {
            tg += part[b + 2u * q];
            tgx += part[b + 2u * q + 1u];
        }
        sums[2u * e] = tg;
        sums[2u * e + 1u] = tgx;
        dbeta[e] += tg;
        dgamma[e] += tgx;
    }"#,
    },
    // Backward, pass 2: dx = gamma inv / m (m dz - sum dz - xhat sum dz xhat).
    Kernel {
        name: "bn_backward_dx",
        buffers: &[("gy", R), ("xhat", R), ("gamma", R), ("beta", R), ("inv", R), ("sums", R), ("dx", W)],
        params: &["total", "len", "swish"],
        body: r#"
    let m = f32(p.len);
    for (var e = gid; e < p.total; e += nthreads) {
        let kc = e / p.len;
        let xh = xhat[e];
        var dz = gy[e];
        if (p.swish != 0u) {
            let z = gamma[kc] * xh + beta[kc];
            let s = sigmoid(z);
            dz = dz * (s + z * s * (1.0f - s));
        }
        dx[e] = gamma[kc] * inv[kc] / m * (m * dz - sums[2u * kc] - xh * sums[2u * kc + 1u]);
    }"#,
    },
    // a += b.
    Kernel {
        name: "add",
        buffers: &[("a", W), ("b", R)],
        params: &["total"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) { a[e] += b[e]; }"#,
    },
    // y = x (tensors moving into an arena, runtime/src/stacked.rs).
    Kernel {
        name: "copy",
        buffers: &[("x", R), ("y", W)],
        params: &["total"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) { y[e] = x[e]; }"#,
    },
    // y = a * b, where b may be shared by all models (model stride bs = 0).
    Kernel {
        name: "mul",
        buffers: &[("a", R), ("b", R), ("y", W)],
        params: &["total", "len", "bs"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) { y[e] = a[e] * b[(e / p.len) * p.bs + e % p.len]; }"#,
    },
    // Global average pool [K, c, n, hw] -> [K, n, c].
    Kernel {
        name: "pool_forward",
        buffers: &[("x", R), ("y", W)],
        params: &["total", "c", "n", "hw"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        let ch = e % p.c;
        let i = (e / p.c) % p.n;
        let k = e / (p.c * p.n);
        let base = ((k * p.c + ch) * p.n + i) * p.hw;
        var s = 0.0f;
        for (var j = 0u; j < p.hw; j++) { s += x[base + j]; }
        y[e] = s / f32(p.hw);
    }"#,
    },
    Kernel {
        name: "pool_backward",
        buffers: &[("gy", R), ("dx", W)],
        params: &["total", "c", "n", "hw"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        let t = e / p.hw;
        let i = t % p.n;
        let ch = (t / p.n) % p.c;
        let k = t / (p.n * p.c);
        dx[e] = gy[(k * p.n + i) * p.c + ch] / f32(p.hw);
    }"#,
    },
    // y[k, i, o] = b[k, o] + sum_j x[k, i, j] w[k, o, j].
    Kernel {
        name: "dense_forward",
        buffers: &[("x", R), ("w", R), ("b", R), ("y", W)],
        params: &["total", "n", "inp", "out"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        let o = e % p.out;
        let i = (e / p.out) % p.n;
        let k = e / (p.out * p.n);
        let xb = (k * p.n + i) * p.inp;
        let wb = (k * p.out + o) * p.inp;
        var acc = 0.0f;
        for (var j = 0u; j < p.inp; j++) { acc += x[xb + j] * w[wb + j]; }
        y[e] = b[k * p.out + o] + acc;
    }"#,
    },
    // dw[k, o, j] += sum_i gy[k, i, o] x[k, i, j]; db[k, o] += sum_i gy[k, i, o].
    Kernel {
        name: "dense_backward_w",
        buffers: &[("x", R), ("gy", R), ("dw", W), ("db", W)],
        params: &["total", "n", "inp", "out"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        let j = e % p.inp;
        let o = (e / p.inp) % p.out;
        let k = e / (p.inp * p.out);
        var acc = 0.0f;
        var accb = 0.0f;
        for (var i = 0u; i < p.n; i++) {
            let g = gy[(k * p.n + i) * p.out + o];
            acc += g * x[(k * p.n + i) * p.inp + j];
            accb += g;
        }
        dw[e] += acc;
        if (j == 0u) { db[k * p.out + o] += accb; }
    }"#,
    },
    // dx[k, i, j] = sum_o gy[k, i, o] w[k, o, j].
    Kernel {
        name: "dense_backward_x",
        buffers: &[("w", R), ("gy", R), ("dx", W)],
        params: &["total", "n", "inp", "out"],
        body: r#"
    for (var e = gid; e < p.total; e += nthreads) {
        let j = e % p.inp;
        let i = (e / p.inp) % p.n;
        let k = e / (p.inp * p.n);
        var acc = 0.0f;
        for (var o = 0u; o < p.out; o++) { acc += gy[(k * p.n + i) * p.out + o] * w[(k * p.out + o) * p.inp + j]; }
        dx[e] = acc;
    }"#,
    },
    // Adam (adam = 1) or SGD with Nesterov momentum on value, with L2 decay; clears grad. The
    // step's learning rate and Adam's bias corrections come in `sched` (lr, c1, c2), uploaded
    // once a step, so that a step's launches are the same every step.
    Kernel {
        name: "update",
        buffers: &[("value", W), ("grad", W), ("m", W), ("v", W), ("sched", R)],
        params: &["total", "adam", "b1:f", "b2:f", "eps:f", "mu:f", "decay:f"],
        body: r#"
    let lr = sched[0];
    for (var e = gid; e < p.total; e += nthreads) {
        let g = grad[e] + p.decay * value[e];
        if (p.adam != 0u) {
            let m1 = p.b1 * m[e] + (1.0f - p.b1) * g;
            let v1 = p.b2 * v[e] + (1.0f - p.b2) * g * g;
            m[e] = m1;
            v[e] = v1;
            value[e] -= lr * (m1 / sched[1]) / (sqrt(v1 / sched[2]) + p.eps);
        } else {
            let m1 = p.mu * m[e] + g;
            m[e] = m1;
            value[e] -= lr * (g + p.mu * m1);
        }
        grad[e] = 0.0f;
    }"#,
    },
    // A training batch [C, n, H*W] gathered from a resident data set [N, C, H*W] with the base
    // augmentation (shift with zero fill, then flip), cutout and mixup applied. draws, per
    // image: index, dy + pad, dx + pad, flip, cutout?, cy, cx, mixup partner.
    Kernel {
        name: "augment",
        buffers: &[("data", R), ("draws", U), ("lam", R), ("x", W)],
        params: &["total", "n", "c", "h", "w", "pad", "side", "mix"],
        body: r#"
    let hw = p.h * p.w;
    for (var e = gid; e < p.total; e += nthreads) {
        let xo = e % p.w;
        let yo = (e / p.w) % p.h;
        let i = (e / hw) % p.n;
        let ch = e / (hw * p.n);
        var acc = 0.0f;
        for (var t = 0u; t <= p.mix; t++) {
            let j = select(i, draws[8u * i + 7u], t == 1u);
            let d = 8u * j;
            let xf = select(xo, p.w - 1u - xo, draws[d + 3u] != 0u);
            let sy = i32(yo + draws[d + 1u]) - i32(p.pad);
            let sx = i32(xf + draws[d + 2u]) - i32(p.pad);
            var a = 0.0f;
            if (sy >= 0 && sy < i32(p.h) && sx >= 0 && sx < i32(p.w)) {
                a = data[(draws[d] * p.c + ch) * hw + u32(sy) * p.w + u32(sx)];
            }
            if (draws[d + 4u] != 0u) {
                let cy = draws[d + 5u];
                let cx = draws[d + 6u];
                let y0 = select(cy - p.side / 2u, 0u, cy < p.side / 2u);
                let x0 = select(cx - p.side / 2u, 0u, cx < p.side / 2u);
                let y1 = min(cy + (p.side + 1u) / 2u, p.h);
                let x1 = min(cx + (p.side + 1u) / 2u, p.w);
                if (yo >= y0 && yo < y1 && xo >= x0 && xo < x1) { a = 0.0f; }
            }
            // lam holds one value per image only with mixup (a select reads both sides).
            var weight = 1.0f;
            if (p.mix != 0u) {
                weight = select(lam[i], 1.0f - lam[i], t == 1u);
            }
            acc += weight * a;
        }
        x[e] = acc;
    }"#,
    },
    // Per model: adds the batch mean of row_loss to stats[4k], and at the first non-finite loss
    // or gradient records step + 1 in stats[4k + 2] and 1 (NaN loss) or 2 in stats[4k + 3].
    // The step comes in `at` (uploaded, like `update`'s schedule). One workgroup per model.
    Kernel {
        name: "loss_stats",
        buffers: &[("row_loss", R), ("grad", R), ("at", U), ("stats", W)],
        params: &["groups", "n", "classes"],
        body: r#"
    for (var k = wg; k < p.groups; k += nwgs) {
        var s = 0.0f;
        var nan = 0.0f;
        var bad = 0.0f;
        for (var i = lid; i < p.n; i += 256u) {
            let l = row_loss[k * p.n + i];
            s += l;
            let bits = bitcast<u32>(l) & 0x7fffffffu;
            nan += select(0.0f, 1.0f, bits > 0x7f800000u);
            bad += select(0.0f, 1.0f, bits >= 0x7f800000u);
        }
        let size = p.n * p.classes;
        for (var j = lid; j < size; j += 256u) {
            let bits = bitcast<u32>(grad[k * size + j]) & 0x7fffffffu;
            bad += select(0.0f, 1.0f, bits >= 0x7f800000u);
        }
        let total = reduce_sum(s, lid);
        let nans = reduce_sum(nan, lid);
        let bads = reduce_sum(bad, lid);
        if (lid == 0u) {
            stats[4u * k] += total / f32(p.n);
            if (bads > 0.0f && stats[4u * k + 2u] == 0.0f) {
                stats[4u * k + 2u] = f32(at[0] + 1u);
                stats[4u * k + 3u] = select(2.0f, 1.0f, nans > 0.0f);
            }
        }
    }"#,
    },
    // Per model: adds to stats[4k + slot] how many rows' argmax (the first maximum) is the label.
    Kernel {
        name: "hits",
        buffers: &[("logits", R), ("labels", U), ("stats", W)],
        params: &["groups", "n", "classes", "slot"],
        body: r#"
    for (var k = wg; k < p.groups; k += nwgs) {
        var h = 0.0f;
        for (var i = lid; i < p.n; i += 256u) {
            let base = (k * p.n + i) * p.classes;
            var best = 0u;
            var top = logits[base];
            for (var c = 1u; c < p.classes; c++) {
                let v = logits[base + c];
                if (v > top) {
                    top = v;
                    best = c;
                }
            }
            h += select(0.0f, 1.0f, best == labels[i]);
        }
        let total = reduce_sum(h, lid);
        if (lid == 0u) { stats[4u * k + p.slot] += total; }
    }"#,
    },
];

/// Definitions both languages' kernels use, in WGSL.
pub const WGSL_PRELUDE: &str = r#"var<workgroup> sh: array<f32, 256>;

fn sigmoid(z: f32) -> f32 {
    return 1.0f / (1.0f + exp(-z));
}

// Nine zeros: per-thread accumulators a loop indexes (the taps of a 3x3 kernel, a block of
// channels).
fn zeros9() -> array<f32, 9> {
    return array<f32, 9>();
}

// Nine zeros as u32: per-thread offsets a loop indexes.
fn words9() -> array<u32, 9> {
    return array<u32, 9>();
}

// Thirty-two zeros: the accumulators of a block of channels by a block of images.
fn zeros32() -> array<f32, 32> {
    return array<f32, 32>();
}

// Seventy-two zeros: the accumulators of a block of channels by the taps of a 3x3 kernel.
fn zeros72() -> array<f32, 72> {
    return array<f32, 72>();
}

var<workgroup> sh9: array<f32, 2304>;
var<workgroup> sh144: array<f32, 144>;
var<workgroup> sum72: array<f32, 72>;

// The sums over the workgroup of each thread's 72 accumulators, into sum72 for every
// invocation: nine at a time through sh9, in two levels (144 threads add 16 values each into
// sh144, nine threads add 16 of those). 18 barriers: a CPU adapter (lavapipe) pays dearly for
// each.
fn reduce_sum72(acc: array<f32, 72>, lid: u32) {
    workgroupBarrier();
    for (var o = 0u; o < 8u; o++) {
        for (var t = 0u; t < 9u; t++) { sh9[t * 256u + lid] = acc[o * 9u + t]; }
        workgroupBarrier();
        if (lid < 144u) {
            // Values tap * 256 + r + 16 i: neighbouring threads read neighbouring words.
            let base = (lid / 16u) * 256u + lid % 16u;
            var s = 0.0f;
            for (var i = 0u; i < 16u; i++) { s += sh9[base + 16u * i]; }
            sh144[lid] = s;
        }
        workgroupBarrier();
        if (lid < 9u) {
            var s = 0.0f;
            for (var i = 0u; i < 16u; i++) { s += sh144[lid * 16u + i]; }
            sum72[o * 9u + lid] = s;
        }
    }
    workgroupBarrier();
}

// Sum over the workgroup; every invocation gets the result.
fn reduce_sum(v: f32, lid: u32) -> f32 {
    workgroupBarrier();
    sh[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if (lid < s) { sh[lid] += sh[lid + s]; }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}
"#;

/// The same definitions in CUDA C++.
pub const CUDA_PRELUDE: &str = r#"typedef unsigned int u32;
typedef int i32;
typedef float f32;
#define workgroupBarrier() __syncthreads()

__shared__ f32 sh[256];

template <typename T> __device__ inline T select(T f, T t, bool c) { return c ? t : f; }
template <typename T> __device__ inline T bitcast(f32 x) { return __float_as_uint(x); }
__device__ inline f32 sigmoid(f32 z) { return 1.0f / (1.0f + expf(-z)); }

// N zeros: per-thread accumulators a loop indexes (the taps of a 3x3 kernel, a block of
// channels, of channels by images); a loop of constant trip count over them unrolls, which
// keeps them in registers.
template <u32 N> struct floats {
    f32 v[N];
    __device__ f32& operator[](u32 i) { return v[i]; }
};
typedef floats<9> f32x9;
template <u32 N> struct words {
    u32 v[N];
    __device__ u32& operator[](u32 i) { return v[i]; }
};
__device__ inline f32x9 zeros9() { return f32x9{}; }
__device__ inline words<9> words9() { return words<9>{}; }
__device__ inline floats<32> zeros32() { return floats<32>{}; }
__device__ inline floats<72> zeros72() { return floats<72>{}; }

__shared__ f32 sh9[2304];
__shared__ f32 sh144[144];
__shared__ f32 sum72[72];

// The sums over the block of each thread's 72 accumulators, into sum72 for every thread, as
// the WGSL prelude's (the same additions in the same order); unrolled, so acc stays in
// registers.
__device__ void reduce_sum72(floats<72>& acc, u32 lid) {
    __syncthreads();
#pragma unroll
    for (u32 o = 0u; o < 8u; o++) {
#pragma unroll
        for (u32 t = 0u; t < 9u; t++) { sh9[t * 256u + lid] = acc[o * 9u + t]; }
        __syncthreads();
        if (lid < 144u) {
            const u32 base = (lid / 16u) * 256u + lid % 16u;
            f32 s = 0.0f;
#pragma unroll
            for (u32 i = 0u; i < 16u; i++) { s += sh9[base + 16u * i]; }
            sh144[lid] = s;
        }
        __syncthreads();
        if (lid < 9u) {
            f32 s = 0.0f;
#pragma unroll
            for (u32 i = 0u; i < 16u; i++) { s += sh144[lid * 16u + i]; }
            sum72[o * 9u + lid] = s;
        }
    }
    __syncthreads();
}

// Sum over the block; every thread gets the result.
__device__ f32 reduce_sum(f32 v, u32 lid) {
    __syncthreads();
    sh[lid] = v;
    __syncthreads();
    for (u32 s = 128u; s > 0u; s = s / 2u) {
        if (lid < s) { sh[lid] += sh[lid + s]; }
        __syncthreads();
    }
    f32 r = sh[0];
    __syncthreads();
    return r;
}
"#;
