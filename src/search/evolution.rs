//! Regularized evolution (Real et al. 2019; the paper's Algorithm 1) over loss genomes, with a
//! pluggable fitness so the search logic is testable without training.
//!
//! Population: the best `population` of `initial` random valid, screened, distinct losses.
//! Each iteration: a tournament of `tournament` members drawn with replacement; the winner is
//! mutated until the child passes screening and is new (by canonical key, and by phenotype
//! distance > 0.01 to every member); the child is scored, joins, and the oldest member leaves.

use super::genome::Genome;
use super::screen::{self, Screened};
use crate::rng::Rng;
use std::collections::{HashMap, VecDeque};

/// Scores a screened candidate (higher is better): training in the real search, a synthetic
/// function in tests.
pub trait Fitness {
    fn score(&mut self, candidate: &Screened) -> f64;
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub population: usize,
    pub initial: usize,
    pub tournament: usize,
    pub iterations: usize,
    pub hidden: usize,
    pub seed: u64,
}

/// A scored member.
#[derive(Clone, Debug)]
pub struct Member {
    pub genome: Genome,
    pub screened: Screened,
    pub fitness: f64,
}

/// The state of a run.
pub struct Evolution {
    pub settings: Settings,
    pub population: VecDeque<Member>,
    /// Every candidate scored so far, by canonical key: no loss is scored twice.
    pub scored: HashMap<String, f64>,
    /// The best member seen.
    pub best: Option<Member>,
    rng: Rng,
}

impl Evolution {
    /// Samples the initial losses and keeps the best `population` of them.
    pub fn start(settings: Settings, fitness: &mut dyn Fitness) -> Evolution {
        let mut e = Evolution {
            rng: Rng::new(settings.seed),
            settings,
            population: VecDeque::new(),
            scored: HashMap::new(),
            best: None,
        };
        let mut sample: Vec<Member> = Vec::new();
        let mut attempts = 0;
        while sample.len() < e.settings.initial && attempts < 100 * e.settings.initial {
            attempts += 1;
            let g = Genome::random(&mut e.rng, e.settings.hidden);
            if let Some(m) = e.admit(g, &sample, fitness) {
                sample.push(m);
            }
        }
        sample.sort_by(|a, b| b.fitness.total_cmp(&a.fitness));
        sample.truncate(e.settings.population);
        // Oldest first: the initial members age in order of their rank (worst leaves first).
        sample.reverse();
        e.population = sample.into();
        e
    }

    /// Screens, deduplicates and scores a genome; None if it is rejected or already known.
    fn admit(&mut self, g: Genome, members: &[Member], fitness: &mut dyn Fitness) -> Option<Member> {
        let graph = g.to_graph("l")?;
        let screened = screen::screen(&graph).ok()?;
        if self.scored.contains_key(&screened.key) {
            return None;
        }
        if members.iter().any(|m| screen::distance(&m.screened.normalised, &screened.normalised) <= 0.01) {
            return None;
        }
        let f = fitness.score(&screened);
        self.scored.insert(screened.key.clone(), f);
        let m = Member { genome: g, screened, fitness: f };
        if self.best.as_ref().is_none_or(|b| m.fitness > b.fitness) {
            self.best = Some(m.clone());
        }
        Some(m)
    }

    /// One iteration: tournament, mutation, scoring, ageing. False when no new child was found.
    pub fn step(&mut self, fitness: &mut dyn Fitness) -> bool {
        let n = self.population.len();
        if n == 0 {
            return false;
        }
        let winner = (0..self.settings.tournament)
            .map(|_| self.rng.below(n))
            .max_by(|&a, &b| self.population[a].fitness.total_cmp(&self.population[b].fitness))
            .expect("tournament is not empty");
        let parent = self.population[winner].genome.clone();
        let members: Vec<Member> = self.population.iter().cloned().collect();
        for _ in 0..100 {
            let Some(child) = parent.mutate(&mut self.rng) else { return false };
            if let Some(m) = self.admit(child, &members, fitness) {
                self.population.push_back(m);
                self.population.pop_front();
                return true;
            }
        }
        false
    }
}
