//! Evaluation of losses across augmentations, label smoothing and seeds (the paper's Tables 5
//! and 6), and the elimination protocol (SPEC section 5). Runs go through the search's store,
//! so nothing is trained twice and an interrupted evaluation resumes.

use crate::ir::Graph;
use crate::search::run::{self, Progress, RunError, loss_text, train_all};
use crate::search::screen;
use crate::search::stats::{Paired, mean_std, paired_t};
use crate::search::store::{Db, Store, StoreError};
use crate::train::TrainSpec;
use std::path::Path;

/// A loss to evaluate: its display name, canonical key and text.
#[derive(Clone, Debug)]
pub struct Loss {
    pub name: String,
    pub key: String,
    pub text: String,
}

impl Loss {
    /// The loss `name` of a module.
    pub fn new(name: &str, module: &Graph) -> Option<Loss> {
        let g = module.extract(name)?;
        Some(Loss { name: name.to_string(), key: screen::key(&g), text: loss_text(name, &g) })
    }
}

/// A table of accuracies: rows (loss, smoothing) by columns (augmentation), each cell the
/// values over seeds.
pub struct Table {
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    /// `cells[row][col]` = values over seeds.
    pub cells: Vec<Vec<Vec<f64>>>,
    /// What the values are ("test accuracy", "validation accuracy").
    pub measure: String,
    /// The loss the others are compared with, seed by seed, and for each row the row of that
    /// loss with the same label smoothing (`None` for its own rows).
    pub against: Option<(String, Vec<Option<usize>>)>,
}

impl Table {
    /// Markdown: mean ± standard deviation in percent, the best mean of each column in bold.
    pub fn markdown(&self) -> String {
        let mut s = format!("| {} | {} |\n", self.measure, self.cols.join(" | "));
        s += &format!("|---|{}\n", "---:|".repeat(self.cols.len()));
        let best: Vec<f64> = (0..self.cols.len())
            .map(|c| self.cells.iter().map(|r| mean_std(&r[c]).0).fold(f64::NEG_INFINITY, f64::max))
            .collect();
        for (r, name) in self.rows.iter().enumerate() {
            let cells: Vec<String> = (0..self.cols.len())
                .map(|c| {
                    let (m, sd) = mean_std(&self.cells[r][c]);
                    let text = format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * sd);
                    if m == best[c] { format!("**{text}**") } else { text }
                })
                .collect();
            s += &format!("| {name} | {} |\n", cells.join(" | "));
        }
        s + &self.comparison()
    }

    /// Row `r`, column `c` against the baseline's row: the baseline's name and the paired
    /// t-test. `None` for the baseline's own rows, without a baseline, or with one seed.
    fn versus(&self, r: usize, c: usize) -> Option<(&str, Paired)> {
        let (base, pairs) = self.against.as_ref()?;
        Some((base, paired_t(&self.cells[r][c], &self.cells[pairs[r]?][c])?))
    }

    /// Each row's mean difference from the baseline's row in points, with the two-sided
    /// p-value of the paired t-test over the seeds.
    fn comparison(&self) -> String {
        let Some((base, pairs)) = &self.against else { return String::new() };
        let seeds = self.cells.first().and_then(|r| r.first()).map_or(0, Vec::len);
        if seeds < 2 {
            return format!("\n(one seed: no comparison with {base})\n");
        }
        let mut s = format!(
            "\nAgainst {base}, paired by seed: the mean difference in points and the two-sided p of a paired \
             t-test over {seeds} seeds\n\n| against {base} | {} |\n|---|{}\n",
            self.cols.join(" | "),
            "---:|".repeat(self.cols.len())
        );
        for (r, name) in self.rows.iter().enumerate().filter(|(r, _)| pairs[*r].is_some()) {
            let cells: Vec<String> = (0..self.cols.len())
                .filter_map(|c| self.versus(r, c))
                .map(|(_, t)| {
                    let p = match t.p {
                        p if p.is_nan() => "identical".to_string(),
                        p if p < 0.001 => "p < 0.001".to_string(),
                        p => format!("p {p:.3}"),
                    };
                    format!("{:+.2} ({p})", 100.0 * t.diff)
                })
                .collect();
            s += &format!("| {name} | {} |\n", cells.join(" | "));
        }
        s
    }

    /// CSV, one line per cell: row, column, runs, mean, standard deviation, the values; with a
    /// baseline, the loss compared with, the mean difference and the paired t-test's p (empty
    /// where there is no test).
    pub fn csv(&self) -> String {
        let mut s = String::from("loss,aug,runs,mean,std,values,against,diff,p\n");
        for (r, name) in self.rows.iter().enumerate() {
            for (c, col) in self.cols.iter().enumerate() {
                let v = &self.cells[r][c];
                let (m, sd) = mean_std(v);
                let vals: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
                let vs = match self.versus(r, c) {
                    Some((base, t)) if t.p.is_nan() => format!("\"{base}\",{:.4},", t.diff),
                    Some((base, t)) => format!("\"{base}\",{:.4},{:.4e}", t.diff, t.p),
                    None => ",,".into(),
                };
                s += &format!("\"{name}\",{col},{},{m:.4},{sd:.4},\"{}\",{vs}\n", v.len(), vals.join(" "));
            }
        }
        s
    }
}

/// What [`evaluate`] varies: the table's columns (augmentations), a row per loss and label
/// smoothing, and the runs per cell (seeds `0..seeds`).
pub struct Grid<'a> {
    pub augs: &'a [String],
    pub smoothings: &'a [f64],
    pub seeds: usize,
    /// The loss each other is compared with, seed by seed (the name of one of them).
    pub baseline: Option<&'a str>,
}

/// Trains every loss under every augmentation, label smoothing and seed of `grid` with `base`
/// as the rest of the spec, and tabulates test accuracy.
pub fn evaluate(
    db: &Db,
    losses: &[Loss],
    grid: Grid<'_>,
    base: &TrainSpec,
    workers: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Table, RunError> {
    let Grid { augs, smoothings, seeds, baseline } = grid;
    let mut jobs = Vec::new();
    let mut rows = Vec::new();
    // Row r is loss r / n with smoothing r % n (n smoothings); each is compared with the
    // baseline's row of the same smoothing.
    let against = match baseline {
        None => None,
        Some(b) => {
            let bi = losses.iter().position(|l| l.name == b).ok_or_else(|| RunError::NoBaseline(b.into()))?;
            let n = smoothings.len();
            let pairs = (0..losses.len() * n).map(|r| (r / n != bi).then_some(bi * n + r % n)).collect();
            Some((b.to_string(), pairs))
        }
    };
    for l in losses {
        for &ls in smoothings {
            rows.push(if smoothings.len() > 1 { format!("{} (ls {ls})", l.name) } else { l.name.clone() });
            for aug in augs {
                for seed in 0..seeds as u64 {
                    let spec = TrainSpec { aug: aug.clone(), seed, label_smoothing: ls, test: true, ..base.clone() };
                    spec.config()?;
                    jobs.push((l.key.clone(), l.text.clone(), spec));
                }
            }
        }
    }
    run::check_specs(std::slice::from_ref(base), workers)?;
    let store = Store::open(db)?;
    let out = train_all(db, &store, &jobs, workers, "evaluate", progress)?;
    let mut it = out.into_iter().map(|o| o.test_accuracy.unwrap_or(0.0));
    let cells = rows
        .iter()
        .map(|_| augs.iter().map(|_| (0..seeds).map(|_| it.next().expect("one outcome per job")).collect()).collect())
        .collect();
    Ok(Table { rows, cols: augs.to_vec(), cells, measure: "test accuracy %".into(), against })
}

/// One stage of the elimination protocol: retrain the best `keep` so far for `steps` steps
/// with `seeds` seeds, and rank them by mean validation accuracy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    pub keep: usize,
    pub steps: usize,
    pub seeds: usize,
}

/// A stage that does not read as `KEEP:STEPS:SEEDS`.
#[derive(Debug, thiserror::Error)]
#[error("stage `{0}`: expected KEEP:STEPS:SEEDS with positive numbers, e.g. 10:2000:3")]
pub struct StageError(String);

impl std::str::FromStr for Stage {
    type Err = StageError;
    fn from_str(s: &str) -> Result<Stage, StageError> {
        let bad = || StageError(s.to_string());
        let v: Vec<usize> = s.split(':').map(|x| x.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
        match v[..] {
            [keep, steps, seeds] if keep > 0 && steps > 0 && seeds > 0 => Ok(Stage { keep, steps, seeds }),
            _ => Err(bad()),
        }
    }
}

/// The survivors of one stage, best first: (loss, mean validation accuracy, values).
pub type Ranking = Vec<(Loss, f64, Vec<f64>)>;

/// Runs the stages on `start` (best first, e.g. a search's ranking): each stage keeps the
/// best `keep` of the previous ranking and ranks them again with its own budget.
pub fn eliminate(
    db: &Db,
    start: Vec<Loss>,
    stages: &[Stage],
    base: &TrainSpec,
    workers: usize,
    progress: &mut dyn FnMut(usize, &Progress),
) -> Result<Vec<Ranking>, RunError> {
    run::check_specs(std::slice::from_ref(base), workers)?;
    let store = Store::open(db)?;
    let mut current: Vec<Loss> = start;
    let mut out = Vec::new();
    for (i, st) in stages.iter().enumerate() {
        current.truncate(st.keep);
        let jobs: Vec<_> = current
            .iter()
            .flat_map(|l| {
                (0..st.seeds as u64).map(move |seed| {
                    (l.key.clone(), l.text.clone(), TrainSpec { steps: st.steps, seed, ..base.clone() })
                })
            })
            .collect();
        for (_, _, spec) in &jobs {
            spec.config()?;
        }
        let res = train_all(db, &store, &jobs, workers, "eliminate", &mut |p| progress(i, p))?;
        let mut ranking: Ranking = current
            .iter()
            .enumerate()
            .map(|(k, l)| {
                let v: Vec<f64> = res[k * st.seeds..(k + 1) * st.seeds].iter().map(|o| o.fitness).collect();
                (l.clone(), mean_std(&v).0, v)
            })
            .collect();
        ranking.sort_by(|a, b| b.1.total_cmp(&a.1));
        current = ranking.iter().map(|r| r.0.clone()).collect();
        out.push(ranking);
    }
    Ok(out)
}

/// The first line of every file [`eliminate_run`] writes: files without it are the user's.
pub const ELIM_MARK: &str = "# written by lossc eliminate";

/// What [`eliminate_run`] did: the candidates it started from, each stage's ranking, and the
/// files it wrote.
pub struct Elimination {
    pub candidates: usize,
    pub rankings: Vec<Ranking>,
    pub written: Vec<std::path::PathBuf>,
}

/// The elimination protocol on the search `run` of the store at `db`: its scored candidates,
/// best first, through `stages` with the search's own training spec, the survivors of the
/// last stage written to `out` as `elim-N.loss`.
pub fn eliminate_run(
    db: &Db,
    run: &str,
    stages: &[Stage],
    workers: usize,
    out: &Path,
    progress: &mut dyn FnMut(usize, &Progress),
) -> Result<Elimination, RunError> {
    let store = Store::open_existing(db)?;
    let settings = match store.run_settings(run)? {
        Some((kind, s)) if kind == "search" => s,
        _ => return Err(StoreError::NoRun { path: db.to_string(), kind: "search", run: run.into() }.into()),
    };
    let base: TrainSpec = serde_json::from_value(settings["spec"].clone())
        .map_err(|e| StoreError::Corrupt(format!("run `{run}` has no training spec: {e}")))?;
    run::check_out_dir(out, "elim-", ELIM_MARK)?;
    let start: Vec<Loss> = run::ranking(&store, run)?
        .iter()
        .map(|r| {
            let g = crate::syntax::parse(&r.text).expect("stored texts parse");
            let name = g.outputs[0].0.clone();
            Loss::new(&name, &g).expect("one output")
        })
        .collect();
    let candidates = start.len();
    let rankings = eliminate(db, start, stages, &base, workers, progress)?;
    let mut written = Vec::new();
    if let (Some(last), Some(st)) = (rankings.last(), stages.last()) {
        std::fs::create_dir_all(out).map_err(|source| RunError::Write { path: out.into(), source })?;
        for (i, (l, mean, _)) in last.iter().enumerate() {
            let path = out.join(format!("elim-{}.loss", i + 1));
            let text = format!(
                "{ELIM_MARK} (run `{run}` in {})\n# mean best validation accuracy {mean:.4} over {} seed(s) of {} steps\n{}",
                db, st.seeds, st.steps, l.text
            );
            std::fs::write(&path, text).map_err(|source| RunError::Write { path: path.clone(), source })?;
            written.push(path);
        }
    }
    Ok(Elimination { candidates, rankings, written })
}
