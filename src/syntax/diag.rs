//! Diagnostics: what went wrong, where, and a hint; rendered with ariadne.

use super::ast::Span;
use ariadne::{Config, IndexType, Label, Report, ReportKind, Source};

/// The kinds of bad input the front end reports; the code is stable for tests and scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidCharacter,
    UnexpectedToken,
    UnexpectedEnd,
    BadNumber,
    UnknownFunction,
    UnknownName,
    WrongArity,
    NotAFunction,
    NotAValue,
    Redefined,
    ReservedName,
    BadEps,
    MisplacedEps,
    NoLoss,
    TooDeep,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            InvalidCharacter => "E01",
            UnexpectedToken => "E02",
            UnexpectedEnd => "E03",
            BadNumber => "E04",
            UnknownFunction => "E05",
            UnknownName => "E06",
            WrongArity => "E07",
            NotAFunction => "E08",
            NotAValue => "E09",
            Redefined => "E10",
            ReservedName => "E11",
            BadEps => "E12",
            MisplacedEps => "E13",
            NoLoss => "E14",
            TooDeep => "E15",
        }
    }
}

/// One error in a `.loss` file.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Diagnostic {
    pub kind: ErrorKind,
    pub message: String,
    /// The offending text.
    pub span: Span,
    /// Said under the underlined text.
    pub label: String,
    /// A second place that explains the first (e.g. the earlier definition). Boxed: rarely
    /// there, and it would make every `Result<_, Diagnostic>` larger.
    pub related: Option<Box<(Span, String)>>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(kind: ErrorKind, span: Span, message: impl Into<String>, label: impl Into<String>) -> Self {
        Diagnostic { kind, message: message.into(), span, label: label.into(), related: None, help: None }
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related = Some(Box::new((span, label.into())));
        self
    }

    /// 1-based line and column of the start of the span.
    pub fn line_col(&self, src: &str) -> (usize, usize) {
        let upto = &src[..self.span.start.min(src.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// The report as text: `file:line:col`, the source line with the span underlined, the hint.
    pub fn render(&self, file: &str, src: &str, color: bool) -> String {
        let config = Config::default().with_color(color).with_index_type(IndexType::Byte);
        let clamp = |s: &Span| s.start.min(src.len())..s.end.min(src.len()).max(s.start.min(src.len()));
        let mut report = Report::build(ReportKind::Error, (file, clamp(&self.span)))
            .with_config(config)
            .with_code(self.kind.code())
            .with_message(&self.message)
            .with_label(Label::new((file, clamp(&self.span))).with_message(&self.label));
        if let Some((span, label)) = self.related.as_deref() {
            report = report.with_label(Label::new((file, clamp(span))).with_message(label));
        }
        if let Some(help) = &self.help {
            report = report.with_help(help);
        }
        // Characters that reorder or hide text (bidirectional overrides, zero-width joiners)
        // would make the quoted line lie about the file: each is shown as U+FFFD, one
        // character for one, so the spans still fit.
        let shown: String = src.chars().map(|c| if hides_text(c) { '\u{fffd}' } else { c }).collect();
        let mut out = Vec::new();
        report.finish().write((file, Source::from(shown)), &mut out).expect("writing to a Vec cannot fail");
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Bidirectional controls and invisible formatting characters.
fn hides_text(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// The known name closest to `name`, if it is close enough to be a likely typo.
pub fn nearest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
