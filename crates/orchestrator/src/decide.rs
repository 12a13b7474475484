//! Keep or discard, accounting for noise: two runs of the same program differ (the seed, and on
//! a wall-clock budget how many steps fit), by 0.01-0.02 bpb early in a short CPU run, so a
//! smaller "improvement" is as likely luck as progress. A change is kept only when its mean score
//! beats the best's mean by more than a critical number of standard errors of that difference
//! ([`threshold`]), and a change that touches only comments or the seed is never kept at all.
//! [`keep_rule`] tells the agent the same rule with the same numbers.

/// Training runs of one change at most: the first and one re-run with another seed.
pub const MAX_TRIALS: usize = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Keep(String),
    Discard(String),
    /// Within the noise: run again with another seed and judge the mean.
    Rerun(String),
}

/// The noise floor: the standard deviation of val_bpb between runs of one program, and the
/// degrees of freedom it was estimated with (None when configured, taken as exact).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    pub sigma: f64,
    pub dof: Option<usize>,
}

impl Noise {
    /// How many standard errors a gain must clear: Student's t for a two-sided 95% test while
    /// sigma rests on few runs (three seeds alone can be far off), never less than 2.
    pub fn critical(&self) -> f64 {
        const T95: [f64; 10] = [
            12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        ];
        match self.dof {
            Some(dof) if (1..=T95.len()).contains(&dof) => T95[dof - 1],
            _ => 2.0,
        }
    }
}

/// The gain a change's mean over `runs` runs must show over the best kept result, the mean of
/// `best_runs` runs, to be kept: `critical` standard errors of the difference of the two means,
/// which are both uncertain, so the standard error is sigma * sqrt(1/runs + 1/best_runs).
pub fn threshold(noise: Noise, runs: usize, best_runs: usize) -> f64 {
    noise.critical() * noise.sigma * (1.0 / runs as f64 + 1.0 / best_runs.max(1) as f64).sqrt()
}

/// Judges a change whose runs scored `scores` against the best kept result, the mean `best` of
/// `best_runs` runs, with noise floor `noise` (None when it was not measured). `may_rerun` is
/// false once re-runs have used their share of the time.
pub fn judge(
    best: f64,
    best_runs: usize,
    noise: Option<Noise>,
    scores: &[f64],
    may_rerun: bool,
) -> Verdict {
    let n = scores.len();
    let delta = mean(scores) - best;
    let Some(noise) = noise else {
        return if delta < 0.0 {
            Verdict::Keep(format!(
                "improved by {:.6} (noise floor not measured)",
                -delta
            ))
        } else {
            Verdict::Discard("no improvement (noise floor not measured)".into())
        };
    };
    let (sigma, critical) = (noise.sigma, noise.critical());
    let threshold = threshold(noise, n, best_runs);
    let runs = match n {
        1 => format!("1 run against {best_runs}, sigma {sigma:.6}"),
        n => format!("mean of {n} runs against {best_runs}, sigma {sigma:.6}"),
    };
    if delta < -threshold {
        Verdict::Keep(format!(
            "clear win: delta {delta:+.6} < -{critical:.2} standard errors = {:.6} ({runs})",
            -threshold
        ))
    } else if delta >= 0.0 {
        Verdict::Discard(format!("no improvement: delta {delta:+.6} >= 0 ({runs})"))
    } else if n < MAX_TRIALS && may_rerun {
        Verdict::Rerun(format!(
            "within the noise: delta {delta:+.6} > {:.6} ({runs}); re-run with another seed",
            -threshold
        ))
    } else {
        let why = if n < MAX_TRIALS {
            "the re-run share of time is spent"
        } else {
            "still within the noise"
        };
        Verdict::Discard(format!(
            "{why}: delta {delta:+.6} > {:.6} ({runs})",
            -threshold
        ))
    }
}

/// The keep rule in words for the agent, with the numbers [`judge`] uses right now: the noise
/// floor in force and a best kept result measured over `best_runs` runs. The one place the rule
/// is told, so that it cannot drift from the code.
pub fn keep_rule(noise: Option<Noise>, best_runs: usize) -> String {
    let Some(noise) = noise else {
        return "The noise between runs is not measured: any gain over the best is kept.".into();
    };
    let critical = match noise.dof {
        Some(dof) => format!(
            "{:.2} standard errors (Student's t at 95% for a sigma from {dof} degrees of freedom)",
            noise.critical()
        ),
        None => format!("{:.2} standard errors", noise.critical()),
    };
    let gain = |runs| {
        let t = threshold(noise, runs, best_runs);
        format!("{t:.6} ({:.1} sigma)", t / noise.sigma)
    };
    format!(
        "Noise floor: sigma {:.6}, the standard deviation of val_bpb between runs of one program. \
         A change is kept when its mean beats the best (the mean of {best_runs} run{}) by more than \
         {critical}: after one run by more than {}; a smaller gain is re-run with another seed \
         while re-runs have time left, and kept only if the mean of its {MAX_TRIALS} runs beats \
         the best by more than {}. Any other result is indistinguishable from luck and discarded.",
        noise.sigma,
        if best_runs == 1 { "" } else { "s" },
        gain(1),
        gain(MAX_TRIALS),
    )
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The standard deviation pooled over groups of runs of one program each (every group adds its
/// squared deviations from its own mean and its size less one to the degrees of freedom); None
/// without a group of two or more.
pub fn pooled_std_dev(groups: &[Vec<f64>]) -> Option<Noise> {
    let (mut squares, mut dof) = (0.0, 0);
    for group in groups.iter().filter(|g| g.len() >= 2) {
        let mean = mean(group);
        squares += group.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        dof += group.len() - 1;
    }
    (dof > 0).then(|| Noise {
        sigma: (squares / dof as f64).sqrt(),
        dof: Some(dof),
    })
}

/// Why a change can never be kept, if it cannot: `changes` holds the old and new text of every
/// changed file. Comments and layout change nothing; a change of the seed only picks another
/// draw from the noise (the orchestrator sets the seed itself, so this is mostly a guard against
/// an agent that rewires how it is read).
pub fn cosmetic(changes: &[(String, String)]) -> Option<&'static str> {
    let code = |text: &str| -> Vec<String> {
        strip_comments(text)
            .lines()
            .map(|l| l.split_whitespace().collect::<String>())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let mut changed_lines = Vec::new();
    for (old, new) in changes {
        let (old, new) = (code(old), code(new));
        if old.concat() == new.concat() {
            continue;
        }
        changed_lines.extend(old.iter().filter(|l| !new.contains(l)).cloned());
        changed_lines.extend(new.iter().filter(|l| !old.contains(l)).cloned());
    }
    if changed_lines.is_empty() {
        Some("only comments or layout changed")
    } else if changed_lines
        .iter()
        .all(|l| l.to_ascii_lowercase().contains("seed"))
    {
        Some("only the seed changed")
    } else {
        None
    }
}

/// Rust source without `//` and `/* */` comments; string and char literals are kept intact.
fn strip_comments(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < chars.len() {
        let next = chars.get(i + 1).copied();
        match chars[i] {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            '"' => {
                out.push('"');
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        out.push(chars[i]);
                        i += 1;
                    }
                    if i < chars.len() {
                        out.push(chars[i]);
                        i += 1;
                    }
                }
                if i < chars.len() {
                    out.push('"');
                    i += 1;
                }
            }
            // A char literal such as '"' or '/' (a lifetime has no closing quote two on).
            '\'' if chars.get(i + 2) == Some(&'\'') => {
                out.extend(&chars[i..i + 3]);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configured noise floor, taken as exact: gains must clear 2 standard errors.
    const SIGMA: Option<Noise> = Some(Noise {
        sigma: 0.001,
        dof: None,
    });

    #[test]
    fn a_clear_win_is_kept_at_once_and_a_loss_discarded() {
        // One run against a best of three: 2 * sigma * sqrt(1 + 1/3) = 0.00231 needed.
        assert!(matches!(
            judge(1.0, 3, SIGMA, &[0.997], true),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            judge(1.0, 3, SIGMA, &[0.998], true),
            Verdict::Rerun(_)
        ));
        assert!(matches!(
            judge(1.0, 3, SIGMA, &[1.0005], true),
            Verdict::Discard(_)
        ));
        assert!(matches!(
            judge(1.0, 3, SIGMA, &[1.0], true),
            Verdict::Discard(_)
        ));
    }

    #[test]
    fn the_best_is_uncertain_too() {
        // Against a best measured once, the same gain is no longer clear.
        assert!(matches!(
            judge(1.0, 1, SIGMA, &[0.9975], true),
            Verdict::Rerun(_)
        ));
        assert!(matches!(
            judge(1.0, 3, SIGMA, &[0.9975], true),
            Verdict::Keep(_)
        ));
    }

    #[test]
    fn a_sigma_from_few_runs_asks_for_more() {
        // Measured from 3 seeds (2 dof), t = 4.303: a gain of 3 standard errors is re-run.
        let few = Some(Noise {
            sigma: 0.001,
            dof: Some(2),
        });
        let se = 0.001 * (1.0f64 + 1.0 / 3.0).sqrt();
        assert!(matches!(
            judge(1.0, 3, SIGMA, &[1.0 - 3.0 * se], true),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            judge(1.0, 3, few, &[1.0 - 3.0 * se], true),
            Verdict::Rerun(_)
        ));
        assert!(matches!(
            judge(1.0, 3, few, &[1.0 - 4.5 * se], true),
            Verdict::Keep(_)
        ));
        // Seen on CPU: sigma 0.00815 from 3 seeds, a no-op's two runs 0.0246 better on average.
        // 2 sigma / sqrt(2) would have kept it; the t rule with both means uncertain does not.
        let cpu = Some(Noise {
            sigma: 0.00815,
            dof: Some(2),
        });
        assert!(matches!(
            judge(2.6065, 3, cpu, &[2.5922, 2.5716], true),
            Verdict::Discard(_)
        ));
        // Well measured, Student's t gives way to the plain 2.
        let many = Noise {
            sigma: 0.001,
            dof: Some(40),
        };
        assert_eq!(many.critical(), 2.0);
    }

    #[test]
    fn an_ambiguous_gain_is_rerun_and_judged_on_the_mean() {
        // 1.5 sigma better: within the noise, so run again.
        assert!(matches!(
            judge(1.0, 3, SIGMA, &[0.9985], true),
            Verdict::Rerun(_)
        ));
        // Two runs both 2 sigma better: the mean clears 2 * sigma * sqrt(1/2 + 1/3) = 0.00183.
        assert!(matches!(
            judge(1.0, 3, SIGMA, &[0.998, 0.998], true),
            Verdict::Keep(_)
        ));
        // The re-run regressed to the mean: luck, not progress.
        let Verdict::Discard(why) = judge(1.0, 3, SIGMA, &[0.9985, 1.0002], true) else {
            panic!("kept");
        };
        assert!(why.contains("still within the noise"), "{why}");
        // No time left for re-runs: discarded, never kept on one ambiguous run.
        let Verdict::Discard(why) = judge(1.0, 3, SIGMA, &[0.9985], false) else {
            panic!("kept without a re-run");
        };
        assert!(why.contains("share"), "{why}");
    }

    #[test]
    fn the_agent_is_told_the_threshold_judge_applies() {
        // Three seeds (2 dof) against a 3-run baseline: t = 4.303, one run must gain
        // 4.303 * sqrt(1 + 1/3) = 4.97 sigma.
        let noise = Noise {
            sigma: 0.001,
            dof: Some(2),
        };
        let few = Some(noise);
        let rule = keep_rule(few, 3);
        assert!(rule.contains("4.30 standard errors"), "{rule}");
        assert!(rule.contains("0.004969 (5.0 sigma)"), "{rule}");
        let edge = threshold(noise, 1, 3);
        assert!(matches!(
            judge(1.0, 3, few, &[1.0 - edge * 1.001], true),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            judge(1.0, 3, few, &[1.0 - edge * 0.999], true),
            Verdict::Rerun(_)
        ));
        assert!(keep_rule(None, 1).contains("any gain"));
    }

    #[test]
    fn without_a_noise_floor_any_gain_counts() {
        assert!(matches!(
            judge(1.0, 1, None, &[0.9999], true),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            judge(1.0, 1, None, &[1.0], true),
            Verdict::Discard(_)
        ));
    }

    #[test]
    fn the_noise_floor_pools_every_repeated_program() {
        assert_eq!(pooled_std_dev(&[vec![1.0], vec![]]), None);
        let one = pooled_std_dev(&[vec![1.0, 1.002, 1.004], vec![2.0]]).unwrap();
        assert!((one.sigma - 0.002).abs() < 1e-12, "{one:?}");
        assert_eq!(one.dof, Some(2));
        // Squares 8e-6 over 2 dof and 1.8e-5 over 1 dof: sqrt(2.6e-5 / 3).
        let pooled = pooled_std_dev(&[vec![1.0, 1.002, 1.004], vec![2.0, 2.006]]).unwrap();
        assert!(
            (pooled.sigma - (2.6e-5f64 / 3.0).sqrt()).abs() < 1e-12,
            "{pooled:?}"
        );
        assert_eq!(pooled.dof, Some(3));
    }

    #[test]
    fn seed_or_comment_edits_are_cosmetic_and_real_edits_are_not() {
        let src = "const LR: f64 = 0.04; // the lr\nlet url = \"http://x\"; // c\nlet seed: u64 = env_or(prepare::SEED_ENV, 42)?;\nlet q = '\"';\n";
        let pair = |new: &str| vec![(src.to_string(), new.to_string())];
        let commented = src.replace("// the lr", "/* a\nlonger */ // note");
        assert_eq!(
            cosmetic(&pair(&commented)),
            Some("only comments or layout changed")
        );
        let reformatted = src.replace("const LR: f64 = 0.04;", "const LR : f64 =\n    0.04;");
        assert_eq!(
            cosmetic(&pair(&reformatted)),
            Some("only comments or layout changed")
        );
        let reseeded = src.replace("42", "1337");
        assert_eq!(cosmetic(&pair(&reseeded)), Some("only the seed changed"));
        let tuned = src.replace("0.04", "0.05");
        assert_eq!(cosmetic(&pair(&tuned)), None);
        // A string that looks like a comment is code.
        let url = src.replace("http://x", "http://y");
        assert_eq!(cosmetic(&pair(&url)), None);
    }
}
