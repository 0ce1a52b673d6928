//! The front end: `.loss` text -> tokens (logos) -> syntax tree (lalrpop) -> graph.

pub mod ast;
pub mod diag;
pub mod lexer;
pub mod lower;

use crate::ir::Graph;
use diag::{Diagnostic, ErrorKind};
use lalrpop_util::ParseError;
use lexer::{LexError, Tok};

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, unused)]
    grammar,
    "/loss.rs"
);

/// Parses and lowers a whole `.loss` file.
pub fn parse(src: &str) -> Result<Graph, Diagnostic> {
    let stmts = grammar::FileParser::new().parse(lexer::tokens(src)).map_err(|e| parse_error(e, src))?;
    lower::lower(&stmts, src.len())
}

/// Turns lalrpop's error into a diagnostic that says what was expected in plain words.
fn parse_error(e: ParseError<usize, Tok<'_>, LexError>, src: &str) -> Diagnostic {
    match e {
        ParseError::User { error: LexError::TooDeep { start, end } } => Diagnostic::new(
            ErrorKind::TooDeep,
            start..end,
            format!("this expression nests more than {} levels deep", ast::MAX_DEPTH),
            "too deep",
        )
        .with_help("a sum of N terms nests N deep, as do N nested calls: split it with `let` bindings"),
        ParseError::User { error: LexError::Char { start, end } } => {
            let raw = &src[start..end];
            let text = if raw.chars().all(|c| c.is_ascii_graphic()) {
                raw.to_string()
            } else {
                raw.escape_unicode().to_string()
            };
            Diagnostic::new(
                ErrorKind::InvalidCharacter,
                start..end,
                format!("unexpected character `{text}`"),
                "not part of the language",
            )
            .with_help("comments start with `#` or `//`; operators are + - * / ^")
        }
        ParseError::InvalidToken { location } => {
            Diagnostic::new(ErrorKind::InvalidCharacter, location..location + 1, "invalid token", "here")
        }
        ParseError::UnrecognizedEof { location, expected } => Diagnostic::new(
            ErrorKind::UnexpectedEnd,
            location..location,
            "unexpected end of file",
            format!("expected {}", expected_list(&expected)),
        )
        .with_help(missing_semicolon_hint(&expected)),
        ParseError::UnrecognizedToken { token: (l, tok, r), expected } => Diagnostic::new(
            ErrorKind::UnexpectedToken,
            l..r,
            format!("unexpected {}", describe(&tok)),
            format!("expected {}", expected_list(&expected)),
        )
        .with_help(missing_semicolon_hint(&expected)),
        ParseError::ExtraToken { token: (l, tok, r) } => {
            Diagnostic::new(ErrorKind::UnexpectedToken, l..r, format!("unexpected {}", describe(&tok)), "extra token")
        }
    }
}

fn missing_semicolon_hint(expected: &[String]) -> String {
    if expected.iter().any(|e| e == "\";\"") {
        "every statement ends with `;`".into()
    } else {
        "a file is a list of `eps = ...;`, `let name = ...;` and `loss name = ...;` statements".into()
    }
}

fn describe(tok: &Tok<'_>) -> String {
    match tok {
        Tok::Ident(s) => format!("name `{s}`"),
        Tok::Num(s) => format!("number `{s}`"),
        Tok::Let => "keyword `let`".into(),
        Tok::Loss => "keyword `loss`".into(),
        Tok::Eps => "keyword `eps`".into(),
        other => format!("`{}`", symbol(other)),
    }
}

fn symbol(tok: &Tok<'_>) -> &'static str {
    match tok {
        Tok::Plus => "+",
        Tok::Minus => "-",
        Tok::Star => "*",
        Tok::Slash => "/",
        Tok::Caret => "^",
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::Comma => ",",
        Tok::Semi => ";",
        Tok::Assign => "=",
        _ => "?",
    }
}

/// `["\"+\"", "\"name\""]` -> "`+` or a name".
fn expected_list(expected: &[String]) -> String {
    let mut words: Vec<String> = expected
        .iter()
        .map(|e| match e.trim_matches('"') {
            "name" => "a name".to_string(),
            "number" => "a number".to_string(),
            other => format!("`{other}`"),
        })
        .collect();
    words.dedup();
    match words.len() {
        0 => "nothing more".into(),
        1 => words.pop().unwrap(),
        _ => {
            let last = words.pop().unwrap();
            format!("{} or {last}", words.join(", "))
        }
    }
}
