//! Prints the runtime's kernels as the CUDA C translation unit the CUDA device compiles
//! (`kernels::cuda()`), for tools that inspect it without a GPU (bench/kernel_sass.sh).

fn main() {
    print!("{}", lossc_runtime::kernels::cuda());
}
