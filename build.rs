//! Generates the parser from `grammar/loss.lalrpop` into OUT_DIR.
fn main() {
    println!("cargo:rerun-if-changed=grammar/loss.lalrpop");
    lalrpop::Configuration::new()
        .set_in_dir("grammar")
        .set_out_dir(std::env::var("OUT_DIR").unwrap())
        .process()
        .expect("lalrpop failed on grammar/loss.lalrpop");
}
