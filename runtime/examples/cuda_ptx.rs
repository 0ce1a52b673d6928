//! Prints the runtime's kernels as the PTX the CUDA device loads: `kernels::cuda()` compiled by
//! NVRTC as `Cuda` compiles it, for the architecture given (default sm_90). For tools that
//! read the kernels without a GPU (bench/kernel_sass.sh); needs libnvrtc on the library path.

fn main() {
    let arch = match std::env::args().nth(1).as_deref() {
        Some("sm_80") => "sm_80",
        None | Some("sm_90") => "sm_90",
        Some(other) => {
            eprintln!("error: unknown architecture {other} (sm_80 or sm_90)");
            std::process::exit(2);
        }
    };
    match lossc_runtime::cuda::compile_ptx(&lossc_runtime::kernels::cuda(), arch) {
        Ok(ptx) => print!("{}", ptx.to_src()),
        Err(log) => {
            eprintln!("error: NVRTC: {log}");
            std::process::exit(1);
        }
    }
}
