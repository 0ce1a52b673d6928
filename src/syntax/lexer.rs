//! The logos lexer. Comments start with `#` or `//` and run to the end of the line.

use logos::Logos;

/// A token of `.loss` text; names and numbers borrow their text from the source.
#[derive(Logos, Clone, Copy, Debug, PartialEq)]
#[logos(skip r"[ \t\r\n\f]+")]
// Comments run from `#` or `//` to the end of the line.
#[logos(skip(r"(#|//)[^\n]*", allow_greedy = true))]
pub enum Tok<'a> {
    #[token("let")]
    Let,
    #[token("loss")]
    Loss,
    #[token("eps")]
    Eps,
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*")]
    Ident(&'a str),
    #[regex(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")]
    Num(&'a str),
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
    #[token("*")]
    Star,
    #[token("/")]
    Slash,
    #[token("^")]
    Caret,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token(",")]
    Comma,
    #[token(";")]
    Semi,
    #[token("=")]
    Assign,
}

/// What the parser's actions and the lexer can fail with, besides the grammar itself.
#[derive(Clone, Debug, PartialEq)]
pub enum LexError {
    /// A character sequence that starts no token.
    Char { start: usize, end: usize },
    /// An expression nested deeper than `ast::MAX_DEPTH`.
    TooDeep { start: usize, end: usize },
}

impl From<super::ast::TooDeep> for lalrpop_util::ParseError<usize, Tok<'_>, LexError> {
    fn from(e: super::ast::TooDeep) -> Self {
        lalrpop_util::ParseError::User { error: LexError::TooDeep { start: e.span.start, end: e.span.end } }
    }
}

/// The token stream lalrpop reads: `(start, token, end)` byte offsets.
pub fn tokens(src: &str) -> impl Iterator<Item = Result<(usize, Tok<'_>, usize), LexError>> + '_ {
    Tok::lexer(src).spanned().map(|(tok, span)| match tok {
        Ok(t) => Ok((span.start, t, span.end)),
        Err(()) => Err(LexError::Char { start: span.start, end: span.end }),
    })
}
