use lossc::search::{genome::Genome, screen};
use lossc::rng::Rng;
use std::time::Instant;
#[test]
fn scratch() {
    let mut rng = Rng::new(1);
    let gs: Vec<Genome> = (0..3000).map(|_| Genome::random(&mut rng, 4)).collect();
    let t = Instant::now();
    let graphs: Vec<_> = gs.iter().map(|g| g.to_graph("l").unwrap()).collect();
    println!("to_graph {:.2} us", t.elapsed().as_secs_f64() / 3000.0 * 1e6);
    let t = Instant::now();
    let s: Vec<_> = graphs.iter().map(|g| lossc::passes::simplify::simplify(g)).collect();
    println!("simplify {:.2} us", t.elapsed().as_secs_f64() / 3000.0 * 1e6);
    let t = Instant::now();
    let _p: Vec<_> = s.iter().map(|g| screen::phenotype(g)).collect();
    println!("phenotype {:.2} us", t.elapsed().as_secs_f64() / 3000.0 * 1e6);
    let t = Instant::now();
    let r: Vec<_> = graphs.iter().map(|g| screen::screen(g)).collect();
    println!("screen {:.2} us", t.elapsed().as_secs_f64() / 3000.0 * 1e6);
    let mut counts = std::collections::BTreeMap::new();
    for x in &r { *counts.entry(match x { Ok(_) => "ok".to_string(), Err(e) => format!("{e:?}") }).or_insert(0) += 1; }
    println!("{counts:?}");
}
