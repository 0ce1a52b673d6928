//! Generates the parser from `grammar/loss.lalrpop` into OUT_DIR, sets `cfg(mvec)` where
//! glibc's vector math library can be linked (x86_64 Linux with glibc; see `mathref::Func`),
//! and gives release links the code layout of `scripts/link-order.txt`.
fn main() {
    println!("cargo:rerun-if-changed=grammar/loss.lalrpop");
    println!("cargo::rustc-check-cfg=cfg(mvec)");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
    {
        println!("cargo:rustc-cfg=mvec");
    }
    // Release binaries: the code a process runs through its first kernel compiles laid out
    // together (scripts/link-order.sh), so that the first compile faults in fewer pages of
    // code. lld's option (the linker rustc uses here); LOSSC_NO_LINK_ORDER=1 turns it off for
    // another linker.
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("scripts/link-order.txt");
    println!("cargo:rerun-if-changed=scripts/link-order.txt");
    println!("cargo:rerun-if-env-changed=LOSSC_NO_LINK_ORDER");
    if var("PROFILE") == "release"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && order.exists()
        && std::env::var_os("LOSSC_NO_LINK_ORDER").is_none()
    {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        // Names the binary no longer has (the file is stale after an upgrade) are skipped.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    lalrpop::Configuration::new()
        .set_in_dir("grammar")
        .set_out_dir(std::env::var("OUT_DIR").unwrap())
        .process()
        .expect("lalrpop failed on grammar/loss.lalrpop");
}
