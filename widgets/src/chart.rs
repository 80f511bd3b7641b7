//! The loss chart: training and evaluation loss against the step, as an
//! inline SVG (no JavaScript), on a linear or a log scale.

use crate::html::escape;

/// The y axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Loss as is.
    #[default]
    Linear,
    /// log10 of the loss, for runs whose loss spans decades.
    Log,
}

/// At most this many points per series are drawn; older points are thinned
/// (every other one dropped) so a long run keeps its shape and a bounded cost.
const MAX_POINTS: usize = 512;

const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 34.0;
/// Mid-tone colours that read on light and dark backgrounds.
const TRAINING_COLOUR: &str = "#3b8fd9";
const EVALUATION_COLOUR: &str = "#f08c28";

/// Loss against step for training and evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossChart {
    training: Vec<(f64, f64)>,
    evaluation: Vec<(f64, f64)>,
    /// The y axis scale.
    pub scale: Scale,
}

impl LossChart {
    /// An empty chart on `scale`.
    pub fn new(scale: Scale) -> Self {
        Self {
            scale,
            ..Self::default()
        }
    }

    /// Adds a training loss at `step` (non-finite values are skipped).
    pub fn push_training(&mut self, step: f64, loss: f64) {
        push(&mut self.training, step, loss);
    }

    /// Adds an evaluation loss at `step` (non-finite values are skipped).
    pub fn push_evaluation(&mut self, step: f64, loss: f64) {
        push(&mut self.evaluation, step, loss);
    }

    /// The training points drawn.
    pub fn training(&self) -> &[(f64, f64)] {
        &self.training
    }

    /// The evaluation points drawn.
    pub fn evaluation(&self) -> &[(f64, f64)] {
        &self.evaluation
    }

    fn y(&self, loss: f64) -> f64 {
        match self.scale {
            Scale::Linear => loss,
            Scale::Log => loss.max(1e-12).log10(),
        }
    }

    /// The chart as an SVG element (an empty frame with a note before the
    /// first point).
    pub fn svg(&self) -> String {
        let all = || self.training.iter().chain(&self.evaluation);
        let mut svg = format!(
            "<svg class=\"taper-loss-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" style=\"font: 11px sans-serif; color: inherit;\">"
        );
        let (x0, x1) = bounds(all().map(|p| p.0));
        let (y0, y1) = bounds(all().map(|p| self.y(p.1)));
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
        let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * plot_h;
        svg.push_str(&format!(
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"currentColor\" stroke-opacity=\"0.4\"/>"
        ));
        if all().next().is_none() {
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"currentColor\" fill-opacity=\"0.7\">no loss logged yet</text></svg>",
                LEFT + plot_w / 2.0,
                TOP + plot_h / 2.0
            ));
            return svg;
        }
        let unscale = |y: f64| match self.scale {
            Scale::Linear => y,
            Scale::Log => 10f64.powf(y),
        };
        // Axis labels: the extremes, which is what a glance needs.
        for (y, anchor_y) in [(y1, TOP + 4.0), (y0, TOP + plot_h)] {
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{anchor_y:.1}\" text-anchor=\"end\" fill=\"currentColor\">{}</text>",
                LEFT - 4.0,
                escape(&format_tick(unscale(y)))
            ));
        }
        for (x, anchor) in [(x0, "start"), (x1, "end")] {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"currentColor\">{}</text>",
                px(x),
                TOP + plot_h + 14.0,
                format_tick(x)
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"currentColor\" fill-opacity=\"0.8\">step</text>",
            LEFT + plot_w / 2.0,
            HEIGHT - 6.0
        ));
        let scale_note = if self.scale == Scale::Log {
            " (log)"
        } else {
            ""
        };
        let legend = [
            ("training loss", TRAINING_COLOUR, &self.training),
            ("evaluation loss", EVALUATION_COLOUR, &self.evaluation),
        ];
        let mut legend_x = LEFT;
        for (name, colour, points) in legend {
            if points.is_empty() {
                continue;
            }
            svg.push_str(&format!(
                "<rect x=\"{legend_x}\" y=\"8\" width=\"10\" height=\"3\" fill=\"{colour}\"/><text x=\"{}\" y=\"13\" fill=\"currentColor\">{name}{scale_note}</text>",
                legend_x + 14.0
            ));
            legend_x += 120.0;
            let d: Vec<String> = points
                .iter()
                .enumerate()
                .map(|(i, &(x, loss))| {
                    let op = if i == 0 { 'M' } else { 'L' };
                    format!("{op}{:.1},{:.1}", px(x), py(self.y(loss)))
                })
                .collect();
            svg.push_str(&format!(
                "<path class=\"taper-{}\" d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\"/>",
                name.replace(' ', "-"),
                d.join(" ")
            ));
            if points.len() < 40 {
                for &(x, loss) in points {
                    svg.push_str(&format!(
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.2\" fill=\"{colour}\"/>",
                        px(x),
                        py(self.y(loss))
                    ));
                }
            }
        }
        svg.push_str("</svg>");
        svg
    }

    /// A one-line summary, for the `text/plain` twin.
    pub fn text(&self) -> String {
        let last = |points: &[(f64, f64)]| {
            points
                .last()
                .map_or_else(|| "-".to_string(), |p| format!("{:.4}", p.1))
        };
        format!(
            "loss: training {} ({} points), evaluation {} ({} points)",
            last(&self.training),
            self.training.len(),
            last(&self.evaluation),
            self.evaluation.len()
        )
    }
}

fn push(points: &mut Vec<(f64, f64)>, step: f64, loss: f64) {
    if !loss.is_finite() || !step.is_finite() {
        return;
    }
    if points.len() >= MAX_POINTS {
        // Keep the first point and every other one after it.
        let mut i = 0;
        points.retain(|_| {
            i += 1;
            i % 2 == 1
        });
    }
    points.push((step, loss));
}

/// The range of `values`, widened so that a flat line or a single point
/// still has an axis.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    (lo, hi)
}

fn format_tick(value: f64) -> String {
    if value.abs() >= 1e7 || (value != 0.0 && value.abs() < 0.01) {
        format!("{value:.2e}")
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_points_and_thin_out() {
        let mut chart = LossChart::new(Scale::Linear);
        assert!(chart.svg().contains("no loss logged yet"));
        chart.push_training(1.0, 2.0);
        chart.push_training(2.0, 1.0);
        chart.push_training(3.0, f64::NAN);
        chart.push_evaluation(2.0, 1.5);
        let svg = chart.svg();
        // The first training point is the top-left corner of the plot, the
        // second the bottom-right.
        assert!(
            svg.contains(&format!(
                "d=\"M{LEFT:.1},{TOP:.1} L{:.1},{:.1}\"",
                WIDTH - RIGHT,
                HEIGHT - BOTTOM
            )),
            "{svg}"
        );
        assert_eq!(svg.matches("<path").count(), 2);
        assert_eq!(chart.training().len(), 2);
        for i in 0..2000 {
            chart.push_training(i as f64, 1.0 / (1.0 + i as f64));
        }
        assert!(chart.training().len() <= MAX_POINTS);
        assert_eq!(chart.training().last(), Some(&(1999.0, 1.0 / 2000.0)));
        chart.scale = Scale::Log;
        assert!(chart.svg().contains("(log)"));
    }
}
