//! Generates the parser from `grammar/loss.lalrpop` into OUT_DIR, and sets `cfg(mvec)` where
//! glibc's vector math library can be linked (x86_64 Linux with glibc; see `mathref::Func`).
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
    lalrpop::Configuration::new()
        .set_in_dir("grammar")
        .set_out_dir(std::env::var("OUT_DIR").unwrap())
        .process()
        .expect("lalrpop failed on grammar/loss.lalrpop");
}
