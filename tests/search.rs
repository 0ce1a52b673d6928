//! The genome, its mutation, and pre-screening.

mod common;

use lossc::ir::UnOp;
use lossc::ir::{Graph, print};
use lossc::rng::Rng;
use lossc::search::genome::{BinGene, Gene, Genome, INPUTS};
use lossc::search::screen::{self, Rejection};

fn gene(unary: UnOp, binary: BinGene, is_binary: bool, a: usize, b: usize) -> Gene {
    Gene { unary, binary, is_binary, a, b }
}

/// Cross-entropy as the paper's Figure 1 encodes it: ln(p), times y, negated at the root.
fn ce_genome() -> Genome {
    let (y, p) = (0, 1);
    Genome {
        genes: vec![
            gene(UnOp::Ln, BinGene::Add, false, p, y),                // 4: ln(p)
            gene(UnOp::Abs, BinGene::Mul, true, y, INPUTS),           // 5: y * ln(p)
            gene(UnOp::Sin, BinGene::Add, false, 2, 3),               // 6: inactive
            gene(UnOp::Exp, BinGene::Max, true, 3, 2),                // 7: inactive
            gene(UnOp::Neg, BinGene::Add, false, INPUTS + 1, INPUTS), // root: -(node 5)
        ],
    }
}

fn parse(src: &str) -> Graph {
    lossc::syntax::parse(src).unwrap()
}

#[test]
fn the_cross_entropy_genome_is_cross_entropy() {
    let g = ce_genome();
    assert!(g.is_valid());
    let graph = g.to_graph("ce").unwrap();
    assert_eq!(screen::key(&graph), screen::key(&parse("loss ce = -y * ln(p);")));
    let s = screen::screen(&graph).unwrap();
    assert_eq!(s.sign, 1.0);
}

#[test]
fn cycles_and_losses_without_p_are_invalid() {
    let mut g = ce_genome();
    g.genes[0].a = INPUTS + 1; // node 4 reads node 5, which reads node 4
    assert!(!g.is_valid());
    let mut g = ce_genome();
    g.genes[0].a = 2; // ln(1): no p left
    assert!(!g.is_valid());
}

#[test]
fn random_genomes_are_valid_and_print_to_text_that_parses_back() {
    let mut rng = Rng::new(1);
    for _ in 0..2000 {
        let g = Genome::random(&mut rng, 4);
        assert!(g.is_valid());
        let graph = g.to_graph("l").unwrap();
        let text = print::to_text(&graph);
        let back = lossc::syntax::parse(&text).unwrap_or_else(|d| panic!("{}\n{text}", d.message));
        assert_eq!(screen::key(&back), screen::key(&graph), "{text}");
    }
}

#[test]
fn mutation_keeps_genomes_valid_changes_them_and_is_seeded() {
    let mut rng = Rng::new(2);
    let parent = Genome::random(&mut rng, 4);
    let mut a = Rng::new(3);
    let mut b = Rng::new(3);
    for _ in 0..500 {
        let c1 = parent.mutate(&mut a).unwrap();
        let c2 = parent.mutate(&mut b).unwrap();
        assert_eq!(c1, c2);
        assert!(c1.is_valid());
        assert_ne!(c1, parent);
    }
}

#[test]
fn screening_rejects_what_the_predecessor_rejects_and_picks_the_sign() {
    let rej = |src: &str| screen::screen(&parse(src)).err();
    assert_eq!(rej("loss l = y + 2;"), Some(Rejection::IgnoresP));
    assert_eq!(rej("loss l = y + 2 * (p - p);"), Some(Rejection::Flat)); // flat before simplification
    assert_eq!(rej("loss l = y + p - p;"), Some(Rejection::Flat)); // not simplified away, but flat
    assert_eq!(rej("loss l = relu(p - 2) + y;"), Some(Rejection::Flat));
    assert_eq!(rej("loss l = y * square(p - 0.5);"), Some(Rejection::MiddleExtremum));
    assert_eq!(rej("loss l = y * sin(20 * p);"), Some(Rejection::Wiggly));
    // A loss written "upside down" is accepted with the sign flipped.
    let s = screen::screen(&parse("loss l = y * ln(p);")).unwrap();
    assert_eq!(s.sign, -1.0);
    assert_eq!(s.key, screen::key(&parse("loss l = -(y * ln(p));")));
    // A gradient whose mean over the probe is zero up to rounding (antisymmetric about
    // p = 1/2 at y = 1) is a tie, not a wrong direction, whichever way the derivative is
    // evaluated (once, the verdict hung on the rounding of the simplified derivative).
    let tie = parse("loss l = atan(p * (y - p));");
    assert!(screen::screen(&tie).is_ok());
    assert!(screen::Screener::pointwise().screen(&tie).is_ok());
    // The off-target term rises three times as fast as the on-target one falls, so the curve
    // keeps this sign, yet at y = 1 the loss grows with p.
    assert_eq!(rej("loss l = 3 * (1 - y) * p + y * p;"), Some(Rejection::WrongDirection));
    // CE and A2 pass and keep the sign they are written with.
    for (file, sign) in [("examples/ce.loss", 1.0), ("examples/a2.loss", 1.0)] {
        let g = parse(&std::fs::read_to_string(file).unwrap());
        assert_eq!(screen::screen(&g).unwrap().sign, sign, "{file}");
    }
}

#[test]
fn equal_losses_written_differently_share_a_key() {
    let a = screen::key(&parse("loss l = y * ln(p) + p * y;"));
    let b = screen::key(&parse("let q = ln(p); loss l = y * p + q * y;"));
    assert_eq!(a, b);
    let c = screen::key(&parse("loss l = y * ln(p) - p * y;"));
    assert_ne!(a, c);
    // Phenotype distance: a loss and a positive multiple of it coincide once normalised.
    let s1 = screen::screen(&parse("loss l = -y * ln(p);")).unwrap();
    let s2 = screen::screen(&parse("loss l = -3 * y * ln(p);")).unwrap();
    assert!(screen::distance(&s1.normalised, &s2.normalised) <= 0.01);
    assert_ne!(s1.key, s2.key);
}

/// A deterministic synthetic fitness (no training): closeness of the normalised binary
/// phenotype to cross-entropy's. Counts calls so double scoring shows, and logs which
/// candidates (by sequence number) were submitted and scored, in order.
struct Synthetic {
    target: Vec<f64>,
    calls: usize,
    keys: std::collections::HashSet<String>,
    log: Vec<(Event, Vec<usize>)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    Submitted,
    Scored,
}

impl lossc::search::evolution::Fitness for Synthetic {
    fn submit(&mut self, batch: &[&lossc::search::evolution::Member]) {
        self.log.push((Event::Submitted, batch.iter().map(|m| m.seq).collect()));
    }

    fn score(&mut self, batch: &[&lossc::search::evolution::Member]) -> Vec<f64> {
        self.log.push((Event::Scored, batch.iter().map(|m| m.seq).collect()));
        batch
            .iter()
            .map(|m| {
                self.calls += 1;
                assert!(self.keys.insert(m.screened.key.clone()), "scored twice: {}", m.screened.key);
                1.0 - screen::distance(&m.screened.normalised, &self.target)
            })
            .collect()
    }
}

fn synthetic() -> Synthetic {
    let ce = screen::screen(&parse("loss l = -y * ln(p);")).unwrap();
    Synthetic { target: ce.normalised, calls: 0, keys: Default::default(), log: Vec::new() }
}

#[test]
fn regularized_evolution_with_a_synthetic_fitness_improves_and_is_reproducible() {
    use lossc::search::evolution::{Evolution, Settings};
    let settings =
        Settings { population: 8, initial: 40, tournament: 4, iterations: 60, hidden: 4, seed: 1, round: 1, lag: 0 };
    let run = || {
        let mut f = synthetic();
        let mut e = Evolution::start(settings.clone(), &mut f);
        let initial_best = e.population.iter().map(|m| m.fitness).fold(f64::MIN, f64::max);
        let mut steps = 0;
        for _ in 0..settings.iterations {
            steps += e.step(&mut f);
            assert_eq!(e.population.len(), settings.population);
        }
        let keys: Vec<String> = e.population.iter().map(|m| m.screened.key.clone()).collect();
        assert_eq!(f.calls, e.scored.len());
        (initial_best, e.best.unwrap().fitness, keys, steps)
    };
    let (initial_best, best, keys, steps) = run();
    println!("synthetic fitness: best of the initial population {initial_best:.4}, after {steps} children {best:.4}");
    assert!(steps > 40, "only {steps} of 60 iterations found a new child");
    assert!(best >= initial_best);
    assert_eq!(run().2, keys, "the same seed must give the same population");
}

#[test]
fn rounds_of_several_children_keep_the_population_size_and_never_score_twice() {
    use lossc::search::evolution::{Evolution, Settings};
    let settings =
        Settings { population: 6, initial: 20, tournament: 3, iterations: 30, hidden: 4, seed: 7, round: 4, lag: 0 };
    let mut f = synthetic();
    let mut e = Evolution::start(settings.clone(), &mut f);
    while e.children < settings.iterations {
        assert!(e.step(&mut f) > 0);
        assert_eq!(e.population.len(), settings.population);
    }
    // Members are ordered by age: sequence numbers rise from the oldest to the newest child.
    let seqs: Vec<usize> = e.population.iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(f.calls, e.scored.len());
}

/// With `lag = L`, a round is scored only once the L rounds after it have been generated and
/// submitted (their workers can start while it trains), never more; each round is scored as
/// it was submitted, in order, once; the population keeps its size and the run is
/// reproducible. With lag 0 each round is submitted and scored in turn, as Algorithm 1 does.
#[test]
fn rounds_generated_ahead_are_submitted_before_the_rounds_before_them_are_scored() {
    use lossc::search::evolution::{Evolution, Settings};
    for lag in [0, 1, 2] {
        let settings =
            Settings { population: 9, initial: 20, tournament: 3, iterations: 24, hidden: 4, seed: 5, round: 3, lag };
        let run = || {
            let mut f = synthetic();
            let mut e = Evolution::start(settings.clone(), &mut f);
            while !e.finished() {
                e.step(&mut f);
                assert_eq!(e.population.len(), settings.population);
            }
            (f, e)
        };
        let (f, e) = run();
        assert!(e.children >= settings.iterations, "lag {lag}: {} children", e.children);
        assert_eq!(f.calls, e.scored.len(), "lag {lag}");
        // The initial losses first, then the rounds.
        assert_eq!(f.log[0].0, Event::Submitted);
        assert_eq!(f.log[1], (Event::Scored, f.log[0].1.clone()));
        // When round i is scored, the rounds submitted after it and not yet scored: `lag` of
        // them, or as many as the run went on to generate.
        let mut pending: std::collections::VecDeque<&Vec<usize>> = Default::default();
        let mut ahead = Vec::new();
        for (event, seqs) in &f.log[2..] {
            match event {
                Event::Submitted => pending.push_back(seqs),
                Event::Scored => {
                    assert_eq!(pending.pop_front(), Some(seqs), "lag {lag}: scored out of order");
                    ahead.push(pending.len());
                }
            }
        }
        assert!(pending.is_empty(), "lag {lag}: a round was submitted and never scored");
        let rounds = ahead.len();
        assert!(rounds >= settings.iterations / settings.round, "lag {lag}: {rounds} rounds");
        let expected: Vec<usize> = (0..rounds).map(|i| lag.min(rounds - 1 - i)).collect();
        assert_eq!(ahead, expected, "lag {lag}: rounds generated ahead of the one scored");
        let keys = |e: &Evolution| e.population.iter().map(|m| m.screened.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&run().1), keys(&e), "lag {lag}: the same settings gave another population");
    }
    // Without a population to draw parents from, a run is over at once (it would otherwise
    // step forever without a child).
    let empty =
        Settings { population: 0, initial: 0, tournament: 3, iterations: 5, hidden: 4, seed: 1, round: 2, lag: 1 };
    let mut f = synthetic();
    let mut e = Evolution::start(empty, &mut f);
    assert!(e.finished());
    assert_eq!(e.step(&mut f), 0);
}

#[test]
fn genomes_encode_and_decode() {
    let mut rng = Rng::new(9);
    for _ in 0..500 {
        let g = Genome::random(&mut rng, 4);
        assert_eq!(Genome::decode(&g.encode()), Some(g.clone()), "{}", g.encode());
    }
    assert_eq!(Genome::decode("ln add 1 99 0"), None);
    assert_eq!(Genome::decode("nope add 1 0 0"), None);
}

#[test]
fn kendall_tau_matches_scipy() {
    use lossc::search::stats::kendall_tau;
    // scipy.stats.kendalltau (tau-b) on these pairs: 0.4, -1, and 0.8 (with ties).
    assert!((kendall_tau(&[1., 2., 3., 4., 5.], &[3., 1., 2., 5., 4.]) - 0.4).abs() < 1e-12);
    assert!((kendall_tau(&[1., 2., 3.], &[3., 2., 1.]) + 1.0).abs() < 1e-12);
    assert!((kendall_tau(&[1., 2., 2., 3.], &[1., 2., 3., 3.]) - 0.8).abs() < 1e-12);
    assert!(kendall_tau(&[1., 1.], &[1., 2.]).is_nan());
}

#[test]
fn the_paired_t_test_matches_scipy() {
    use lossc::search::stats::paired_t;
    // scipy.stats.ttest_rel (tests/python/ttest_rel.py) on these pairs.
    let cases: [(&[f64], &[f64], f64, f64); 3] = [
        (&[0.81, 0.83, 0.80, 0.82, 0.84], &[0.80, 0.81, 0.80, 0.80, 0.82], 3.500000000000003, 0.02489616346022269),
        (&[0.7436, 0.7449], &[0.7397, 0.7464], 0.44444444444446046, 0.7337501225046783),
        (&[0.5, 0.6, 0.7, 0.65], &[0.55, 0.52, 0.71, 0.6], 0.5980503604017321, 0.5919445337378189),
    ];
    for (a, b, t, p) in cases {
        let r = paired_t(a, b).unwrap();
        assert!((r.t - t).abs() < 1e-9 * t.abs() && (r.p - p).abs() < 1e-12, "{a:?} {b:?}: {r:?}");
    }
    // Every difference the same: t is infinite and p 0; all zero: no test (NaN), as scipy.
    let r = paired_t(&[1.0, 2.0, 3.0], &[0.0, 1.0, 2.0]).unwrap();
    assert!(r.t.is_infinite() && r.p == 0.0);
    assert!(paired_t(&[1.0, 2.0], &[1.0, 2.0]).unwrap().p.is_nan());
    assert_eq!(paired_t(&[1.0], &[0.0]), None);

    // Live, on random pairs from 2 to 40 runs, wherever scipy is (it comes with JAX).
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ttest_rel.py");
    let Some(py) = common::python("LOSSC_PYTHON", common::BENCH_PYTHON, "scipy") else {
        assert!(std::env::var_os("LOSSC_REQUIRE_JAX").is_none(), "LOSSC_REQUIRE_JAX is set but scipy is missing");
        println!("SKIPPED the live comparison: no Python with scipy (bench/.venv or LOSSC_PYTHON)");
        return;
    };
    let mut rng = lossc::rng::Rng::new(7);
    let pairs: Vec<(Vec<f64>, Vec<f64>)> = (0..300)
        .map(|i| {
            let n = 2 + i % 39;
            let shift = 0.02 * (rng.f64() - 0.5);
            let a: Vec<f64> = (0..n).map(|_| 0.8 + 0.03 * rng.f64()).collect();
            let b = a.iter().map(|x| x + shift + 0.01 * (rng.f64() - 0.5)).collect();
            (a, b)
        })
        .collect();
    let mut child = std::process::Command::new(&py)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let json = serde_json::to_string(&pairs).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), json.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let want: Vec<(f64, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    let mut worst = 0.0f64;
    for ((a, b), (t, p)) in pairs.iter().zip(want) {
        let r = paired_t(a, b).unwrap();
        assert!((r.t - t).abs() <= 1e-9 * t.abs().max(1.0), "{a:?} {b:?}: t {} against {t}", r.t);
        assert!((r.p - p).abs() <= 1e-12, "{a:?} {b:?}: p {} against {p}", r.p);
        worst = worst.max((r.p - p).abs());
    }
    println!("paired t-test: 300 random pairs of 2 to 40 runs match scipy, p within {worst:.1e}");
}

#[test]
fn the_columnar_cached_screen_agrees_with_the_pointwise_interpreter() {
    // Same verdicts and keys on random genomes and on mutation chains (where the column cache
    // is hit most); a wrong cache hit or column op would show here.
    for mutants in [false, true] {
        let b = lossc::app::bench::screen_throughput(3000, 5, mutants, true, 1);
        assert_eq!(b.disagreements, 0);
        assert!(b.accepted > 300 && b.accepted < 2700, "{} of 3000 accepted", b.accepted);
    }
}
