//! Regularized evolution (Real et al. 2019; the paper's Algorithm 1) over loss genomes, with a
//! pluggable fitness so the search logic is testable without training.
//!
//! Population: the best `population` of `initial` random valid, screened, distinct losses.
//! Each round: `round` tournaments of `tournament` members drawn with replacement; each winner
//! is mutated until the child passes screening and is new (by canonical key, and by phenotype
//! distance > 0.01 to every member and every child of the round); the children are scored
//! together (in parallel by the store's workers), join in order, and as many of the oldest
//! members leave. With `round = 1` this is Algorithm 1 exactly. `lossc search` keeps `round`
//! at most `population`: a larger round's first children would leave before any tournament.
//!
//! With `lag = L`, each round's tournaments see the population as it was L rounds before the
//! round joins: L more rounds are generated and submitted while a round trains, so that a
//! worker whose candidate stopped at the gate takes a later round's job instead of waiting for
//! the rest of its round (a round lasts as long as its longest training).
//!
//! The run is a deterministic function of its settings and of the fitness values it is given,
//! so a store that remembers fitness values can resume it by replaying it.

use super::genome::Genome;
use super::screen::{self, Rejection, Screened};
use crate::ir::Graph;
use crate::rng::Rng;
use std::collections::{HashMap, VecDeque};

/// Scores screened candidates (higher is better): training in the real search, a synthetic
/// function in tests.
pub trait Fitness {
    /// The fitness of each candidate, in order; called once per round.
    fn score(&mut self, candidates: &[&Member]) -> Vec<f64>;
    /// Announces candidates that `score` will be asked for later, so that their training can
    /// start now (the store enqueues them); called once per round when it is generated.
    fn submit(&mut self, _candidates: &[&Member]) {}
    /// Sees every candidate the run generates, in order, with its verdict; a store records them.
    fn observe(&mut self, _seq: usize, _genome: &Genome, _graph: &Graph, _verdict: &Verdict) {}
}

/// What became of a generated candidate.
#[derive(Clone, Debug)]
pub enum Verdict {
    Accepted(Box<Screened>),
    Rejected(Rejection),
    /// Its canonical key was seen before in this run.
    DuplicateKey,
    /// Its normalised phenotype is within 0.01 of a member's.
    DuplicatePhenotype,
}

impl Verdict {
    pub fn name(&self) -> String {
        match self {
            Verdict::Accepted(_) => "ok".into(),
            Verdict::Rejected(r) => format!("{r:?}"),
            Verdict::DuplicateKey => "DuplicateKey".into(),
            Verdict::DuplicatePhenotype => "DuplicatePhenotype".into(),
        }
    }
}

/// Settings of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub population: usize,
    pub initial: usize,
    pub tournament: usize,
    pub iterations: usize,
    pub hidden: usize,
    pub seed: u64,
    /// Children generated and scored together per round.
    pub round: usize,
    /// Rounds generated ahead of the results they could have used (0: each round sees the
    /// one before it). Left out of the stored settings when 0; settings without it read as 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lag: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Rounds in a row without a new child after which a run stops: its population has converged.
pub const BARREN_ROUNDS: usize = 20;

/// A candidate that passed screening, with its fitness once scored.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its place in the run's sequence of generated candidates.
    pub seq: usize,
    pub genome: Genome,
    pub screened: Screened,
    pub fitness: f64,
}

/// The state of a run.
pub struct Evolution {
    pub settings: Settings,
    /// Oldest first.
    pub population: VecDeque<Member>,
    /// Every candidate scored so far, by canonical key: no loss is scored twice.
    pub scored: HashMap<String, f64>,
    /// The best member seen.
    pub best: Option<Member>,
    /// Children added so far.
    pub children: usize,
    /// Rounds generated and not yet joined, oldest first (at most `lag + 1`).
    in_flight: VecDeque<Vec<Member>>,
    /// Rounds joined in a row that added no child.
    barren: usize,
    seq: usize,
    rng: Rng,
    screener: screen::Screener,
}

impl Evolution {
    /// Samples the initial losses, scores them, and keeps the best `population` of them.
    pub fn start(settings: Settings, fitness: &mut dyn Fitness) -> Evolution {
        let mut e = Evolution {
            rng: Rng::new(settings.seed),
            settings,
            population: VecDeque::new(),
            scored: HashMap::new(),
            best: None,
            children: 0,
            in_flight: VecDeque::new(),
            barren: 0,
            seq: 0,
            screener: screen::Screener::new(),
        };
        let mut sample: Vec<Member> = Vec::new();
        let mut attempts = 0;
        while sample.len() < e.settings.initial && attempts < 100 * e.settings.initial.max(1) {
            attempts += 1;
            let g = Genome::random(&mut e.rng, e.settings.hidden);
            if let Some(m) = e.admit(g, &sample, fitness) {
                sample.push(m);
            }
        }
        fitness.submit(&sample.iter().collect::<Vec<_>>());
        e.score(&mut sample, fitness);
        // Stable: equal fitness keeps the order of generation.
        sample.sort_by(|a, b| b.fitness.total_cmp(&a.fitness));
        sample.truncate(e.settings.population);
        // Oldest first: the initial members age in order of their rank (worst leaves first).
        sample.reverse();
        e.population = sample.into();
        e
    }

    fn score(&mut self, members: &mut [Member], fitness: &mut dyn Fitness) {
        let refs: Vec<&Member> = members.iter().collect();
        let scores = fitness.score(&refs);
        for (m, f) in members.iter_mut().zip(scores) {
            m.fitness = f;
            self.scored.insert(m.screened.key.clone(), f);
            if self.best.as_ref().is_none_or(|b| m.fitness > b.fitness) {
                self.best = Some(m.clone());
            }
        }
    }

    /// Screens and deduplicates a genome against the run's keys and `members`; None if it is
    /// rejected. The verdict goes to the fitness's observer either way.
    fn admit(&mut self, g: Genome, members: &[Member], fitness: &mut dyn Fitness) -> Option<Member> {
        let graph = g.to_graph("l")?;
        let seq = self.seq;
        self.seq += 1;
        let verdict = match self.screener.screen(&graph) {
            Err(r) => Verdict::Rejected(r),
            Ok(s) if self.scored.contains_key(&s.key) => Verdict::DuplicateKey,
            Ok(s)
                if self
                    .population
                    .iter()
                    .chain(self.in_flight.iter().flatten())
                    .chain(members)
                    .any(|m| screen::distance(&m.screened.normalised, &s.normalised) <= 0.01) =>
            {
                Verdict::DuplicatePhenotype
            }
            Ok(s) => Verdict::Accepted(Box::new(s)),
        };
        fitness.observe(seq, &g, &graph, &verdict);
        match verdict {
            Verdict::Accepted(s) => {
                // Reserve the key now: a second child with it in the same round is a duplicate.
                self.scored.insert(s.key.clone(), f64::NAN);
                Some(Member { seq, genome: g, screened: *s, fitness: f64::NAN })
            }
            _ => None,
        }
    }

    /// Whether the run is over: no round in flight, and none wanted (`iterations` children
    /// joined, none in [`BARREN_ROUNDS`] rounds in a row, or no population to draw from).
    pub fn finished(&self) -> bool {
        self.in_flight.is_empty() && !self.wants_more()
    }

    /// One round joins: first rounds are generated (and submitted) until `lag + 1` are in
    /// flight, while the run still wants children; then the oldest is scored (waiting for its
    /// training) and joins, its children replacing as many of the oldest members. Returns the
    /// children added.
    pub fn step(&mut self, fitness: &mut dyn Fitness) -> usize {
        while self.in_flight.len() <= self.settings.lag && self.wants_more() {
            let round = self.generate(fitness);
            fitness.submit(&round.iter().collect::<Vec<_>>());
            self.in_flight.push_back(round);
        }
        let Some(mut children) = self.in_flight.pop_front() else { return 0 };
        self.score(&mut children, fitness);
        let added = children.len();
        for c in children {
            self.population.push_back(c);
            self.population.pop_front();
        }
        self.children += added;
        self.barren = if added == 0 { self.barren + 1 } else { 0 };
        added
    }

    /// Whether another round should be generated: children joined and in flight fall short of
    /// `iterations`, and the rounds joined lately added some.
    fn wants_more(&self) -> bool {
        let in_flight: usize = self.in_flight.iter().map(Vec::len).sum();
        !self.population.is_empty()
            && self.children + in_flight < self.settings.iterations
            && self.barren < BARREN_ROUNDS
    }

    /// A round's children: tournaments on the population as it is now, each winner mutated
    /// until the child is new (against the population, the rounds in flight and this round).
    fn generate(&mut self, fitness: &mut dyn Fitness) -> Vec<Member> {
        let n = self.population.len();
        let mut children: Vec<Member> = Vec::new();
        for _ in 0..self.settings.round.max(1) {
            let winner = (0..self.settings.tournament)
                .map(|_| self.rng.below(n))
                .max_by(|&a, &b| self.population[a].fitness.total_cmp(&self.population[b].fitness))
                .expect("tournament is not empty");
            let parent = self.population[winner].genome.clone();
            for _ in 0..100 {
                let Some(child) = parent.mutate(&mut self.rng) else { break };
                if let Some(m) = self.admit(child, &children, fitness) {
                    children.push(m);
                    break;
                }
            }
        }
        children
    }
}
