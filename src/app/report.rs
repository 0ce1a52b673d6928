//! The tables a `lossc sample` run reports: Kendall's tau between the augmentations' rankings
//! of the sampled losses (the paper's Table 3), and the best losses' fitness.

use crate::search::run::SampleTable;
use crate::search::stats::kendall_tau;

/// Kendall's tau tables of a sample: over all losses, and over the best `top` by mean fitness.
pub struct TauReport<'a> {
    table: &'a SampleTable,
    /// Row indices, best mean fitness first.
    by_mean: Vec<usize>,
    top: usize,
}

impl<'a> TauReport<'a> {
    pub fn new(table: &'a SampleTable, top: usize) -> TauReport<'a> {
        let rows = &table.rows;
        let mean = |i: usize| rows[i].2.iter().sum::<f64>() / table.augs.len() as f64;
        let mut by_mean: Vec<usize> = (0..rows.len()).collect();
        by_mean.sort_by(|&a, &b| mean(b).total_cmp(&mean(a)));
        TauReport { table, by_mean, top: top.min(rows.len()) }
    }

    /// The two row sets the tables cover, labelled.
    fn sets(&self) -> [(String, Vec<usize>); 2] {
        let n = self.table.rows.len();
        [
            (format!("all {n} losses"), (0..n).collect()),
            (format!("best {} by mean fitness", self.top), self.by_mean[..self.top].to_vec()),
        ]
    }

    fn tau(&self, set: &[usize], a: usize, b: usize) -> f64 {
        let column = |c: usize| set.iter().map(|&i| self.table.rows[i].2[c]).collect::<Vec<f64>>();
        kendall_tau(&column(a), &column(b))
    }

    /// Markdown: the two tau tables, then the best losses' fitness under each augmentation.
    pub fn markdown(&self) -> String {
        let augs = &self.table.augs;
        let mut s = String::new();
        for (label, set) in self.sets() {
            s += &format!(
                "\nKendall's tau, {label}:\n\n| | {} |\n|---|{}\n",
                augs.join(" | "),
                "---|".repeat(augs.len())
            );
            for a in 0..augs.len() {
                let cells: Vec<String> = (0..augs.len()).map(|b| format!("{:.3}", self.tau(&set, a, b))).collect();
                s += &format!("| {} | {} |\n", augs[a], cells.join(" | "));
            }
        }
        s += &format!("\nfitness (best validation accuracy) of each loss:\n\n| loss | {} | key |\n", augs.join(" | "));
        s += &format!("|---|{}---|\n", "---|".repeat(augs.len()));
        for &i in self.by_mean.iter().take(self.top) {
            let (seq, key, f) = &self.table.rows[i];
            let f: Vec<String> = f.iter().map(|v| format!("{v:.4}")).collect();
            s += &format!("| c{seq} | {} | `{key}` |\n", f.join(" | "));
        }
        s
    }

    /// CSV, one line per pair of augmentations and row set.
    pub fn csv(&self) -> String {
        let augs = &self.table.augs;
        let mut s = String::from("losses,aug_a,aug_b,n,kendall_tau\n");
        for (label, set) in self.sets() {
            let which = label.split(' ').next().unwrap_or("");
            for a in 0..augs.len() {
                for b in a + 1..augs.len() {
                    s += &format!("{which},{},{},{},{:.4}\n", augs[a], augs[b], set.len(), self.tau(&set, a, b));
                }
            }
        }
        s
    }
}
