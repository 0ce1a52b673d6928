//! insta snapshots of every stage for the paper's losses: the IR as parsed, the simplified
//! text, the gradient text, and op counts before and after simplification.

mod common;

use lossc::ir::print;
use lossc::passes::{fuse, simplify::simplify};
use std::fmt::Write;

#[test]
fn ir_as_parsed() {
    for (name, g) in common::example_graphs() {
        insta::assert_snapshot!(format!("ir_{name}"), print::dump(&g));
    }
}

#[test]
fn simplified_text() {
    for (name, g) in common::example_graphs() {
        insta::assert_snapshot!(format!("simplified_{name}"), print::to_text(&simplify(&g)));
    }
}

#[test]
fn gradient_text() {
    for (name, g) in common::example_graphs() {
        insta::assert_snapshot!(format!("grad_{name}"), print::to_text(&fuse::derivatives(&g, &name).unwrap()));
    }
}

#[test]
fn op_counts_before_and_after_simplification() {
    let mut table = String::from("loss | ops parsed | ops simplified | fused L+s ops\n");
    for (name, g) in common::example_graphs() {
        let fused = fuse::fuse(&g, &name).unwrap();
        let _ = writeln!(
            table,
            "{name:4} | {:10} | {:14} | {:13}",
            g.op_count(),
            simplify(&g).op_count(),
            fused.graph.op_count()
        );
    }
    insta::assert_snapshot!(table);
}
