//! Progress of a long run. On a terminal: one line per finished trial above a status line
//! that is redrawn in place (a spinner, trials done of all, elapsed, an estimate of what is
//! left, the longest-running trial). Elsewhere (CI logs, pipes): the same per-trial lines,
//! plain, and nothing redrawn.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::lab::live::age;
use crate::report;
use crate::run::TrialReport;

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

pub struct Progress {
    total: usize,
    done: usize,
    failed: usize,
    started: Instant,
    running: Vec<(String, Instant)>,
    /// Redraw a status line (stderr is a terminal).
    tty: bool,
    frame: usize,
    drawn: bool,
}

impl Progress {
    pub fn new(total: usize, tty: bool) -> Progress {
        Progress { total, done: 0, failed: 0, started: Instant::now(), running: Vec::new(), tty, frame: 0, drawn: false }
    }

    pub fn started(&mut self, name: &str) {
        self.running.push((name.to_string(), Instant::now()));
        self.tick();
    }

    /// Prints the trial's result line (above the status line on a terminal).
    pub fn finished(&mut self, r: &TrialReport) {
        self.running.retain(|(n, _)| *n != r.name);
        self.done += 1;
        if r.fails_run() {
            self.failed += 1;
        }
        self.clear();
        let w = self.total.to_string().len();
        let cause = r.failure.as_deref().map(|f| format!("  {}", f.lines().next().unwrap_or(""))).unwrap_or_default();
        let cause = if r.ignored.is_some() { format!("  {}", r.ignored.as_deref().unwrap_or("")) } else { cause };
        let line = format!(
            "[{:>w$}/{}] {:<5} {:>6.1} s  {}{}",
            self.done,
            self.total,
            report::result_word(r),
            r.elapsed.as_secs_f64(),
            r.name,
            shorten(&cause, 160)
        );
        let _ = writeln!(std::io::stderr(), "{line}");
        self.tick();
    }

    /// Redraws the status line (terminal only).
    pub fn tick(&mut self) {
        if !self.tty || self.done == self.total {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        let line = shorten(&self.status_line(self.started.elapsed()), terminal_width().saturating_sub(1));
        let _ = write!(std::io::stderr(), "\r\x1b[2K{line}");
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    /// Removes the status line.
    pub fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }

    /// `⠹ 12/172 done · 8 running · 1m12s elapsed · about 2m30s left · 1 failed · longest: NAME (41s)`
    fn status_line(&self, elapsed: Duration) -> String {
        let mut s = format!(
            "{} {}/{} done · {} running · {} elapsed",
            SPINNER[self.frame],
            self.done,
            self.total,
            self.running.len(),
            age(elapsed.as_secs())
        );
        match estimate(elapsed, self.done, self.total) {
            Some(left) => s.push_str(&format!(" · about {} left", age(left.as_secs()))),
            None => s.push_str(" · estimating"),
        }
        if self.failed > 0 {
            s.push_str(&format!(" · {} failed", self.failed));
        }
        if let Some((name, since)) = self.running.iter().min_by_key(|(_, t)| *t) {
            s.push_str(&format!(" · longest: {name} ({})", age(since.elapsed().as_secs())));
        }
        s
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A line saying what a long wait is doing: on a terminal redrawn with a spinner and the
/// time spent on it; elsewhere printed once per change.
pub struct Spinner {
    shared: Option<std::sync::Arc<std::sync::Mutex<(String, Instant, bool)>>>,
}

impl Spinner {
    pub fn start(tty: bool) -> Spinner {
        if !tty {
            return Spinner { shared: None };
        }
        let shared = std::sync::Arc::new(std::sync::Mutex::new((String::new(), Instant::now(), false)));
        let s = shared.clone();
        std::thread::spawn(move || {
            for frame in (0..SPINNER.len()).cycle() {
                std::thread::sleep(Duration::from_millis(120));
                let Ok(g) = s.lock() else { return };
                let (text, since, stopped) = &*g;
                if *stopped {
                    return;
                }
                if !text.is_empty() {
                    let line = format!("{} {text} ({})", SPINNER[frame], age(since.elapsed().as_secs()));
                    let _ = write!(std::io::stderr(), "\r\x1b[2K{}", shorten(&line, terminal_width().saturating_sub(1)));
                    let _ = std::io::stderr().flush();
                }
            }
        });
        Spinner { shared: Some(shared) }
    }

    /// What the wait is doing now.
    pub fn say(&self, text: &str) {
        match &self.shared {
            None => eprintln!("{text}"),
            Some(s) => {
                if let Ok(mut g) = s.lock() {
                    if !g.0.is_empty() {
                        // keep the finished phase on screen
                        let _ = writeln!(std::io::stderr(), "\r\x1b[2K  {} ({})", g.0, age(g.1.elapsed().as_secs()));
                    }
                    *g = (text.to_string(), Instant::now(), g.2);
                }
            }
        }
    }

    /// Stops redrawing and clears the line.
    pub fn stop(&self) {
        if let Some(s) = &self.shared {
            if let Ok(mut g) = s.lock() {
                if !g.2 {
                    g.2 = true;
                    if !g.0.is_empty() {
                        let _ = writeln!(std::io::stderr(), "\r\x1b[2K  {} ({})", g.0, age(g.1.elapsed().as_secs()));
                    }
                }
            }
        }
    }
}

/// What is left, at the pace so far (trials run concurrently: the pace is the whole run's).
fn estimate(elapsed: Duration, done: usize, total: usize) -> Option<Duration> {
    (done > 0).then(|| elapsed.mul_f64((total - done) as f64 / done as f64))
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Columns of the terminal on stderr (80 when it cannot tell).
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_estimates_from_the_pace_so_far() {
        let mut p = Progress::new(10, false);
        assert!(p.status_line(Duration::from_secs(5)).contains("0/10 done · 0 running · 5s elapsed · estimating"));
        p.running.push(("a::vxlan::reference".into(), Instant::now()));
        p.done = 4;
        p.failed = 1;
        let s = p.status_line(Duration::from_secs(60));
        assert!(s.contains("4/10 done · 1 running · 1m00s elapsed · about 1m30s left · 1 failed · longest: a::vxlan::reference"), "{s}");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(estimate(Duration::from_secs(10), 10, 10), Some(Duration::ZERO));
    }
}
