//! Rendered diagnostics for bad input, as the user sees them (no colour), plus a fuzz test that
//! no input makes the front end panic.

use lossc::syntax::{diag::ErrorKind, parse};
use proptest::prelude::*;

fn render(src: &str) -> (ErrorKind, String) {
    let d = parse(src).expect_err("input should be rejected");
    (d.kind, d.render("bad.loss", src, false))
}

macro_rules! error_snapshot {
    ($name:ident, $kind:ident, $src:expr) => {
        #[test]
        fn $name() {
            let (kind, text) = render($src);
            assert_eq!(kind, ErrorKind::$kind);
            insta::assert_snapshot!(text);
        }
    };
}

error_snapshot!(invalid_character, InvalidCharacter, "loss ce = -y * ln(p) $ 2;\n");
error_snapshot!(missing_semicolon, UnexpectedToken, "loss a = y * p\nloss b = p;\n");
error_snapshot!(unexpected_end, UnexpectedEnd, "loss a = ln(p");
error_snapshot!(number_out_of_range, BadNumber, "loss a = p * 1e999;\n");
error_snapshot!(unknown_function, UnknownFunction, "# typo\nloss a = -y * bessel_ie0(p);\n");
error_snapshot!(unknown_name, UnknownName, "let logp = ln(p);\nloss a = -y * lgp;\n");
error_snapshot!(wrong_arity, WrongArity, "loss a = max(p);\n");
error_snapshot!(value_called, NotAFunction, "loss a = y(p + 1);\n");
error_snapshot!(function_as_value, NotAValue, "loss a = ln * p;\n");
error_snapshot!(redefined_let, Redefined, "let q = p;\nlet q = y;\nloss a = q;\n");
error_snapshot!(redefined_loss, Redefined, "loss a = p;\nloss a = y;\n");
error_snapshot!(rebinding_an_input, ReservedName, "let p = 0.5;\nloss a = p;\n");
error_snapshot!(negative_eps, BadEps, "eps = -1e-7;\nloss a = ln(p);\n");
error_snapshot!(eps_after_loss, MisplacedEps, "loss a = ln(p);\neps = 1e-5;\n");
error_snapshot!(no_loss, NoLoss, "# only a binding\nlet q = p;\n");
error_snapshot!(missing_operand, UnexpectedToken, "loss a = y * * p;\n");
error_snapshot!(number_underflow, BadNumber, "loss a = 1e-400 * p;\n");
error_snapshot!(hidden_character, InvalidCharacter, "loss a = p \u{202e}+ y;\n");

/// Nesting past the limit (its rendering quotes the whole expression, so it is checked by
/// parts): the kind, the message and the place where the limit is crossed.
#[test]
fn nesting_past_the_limit() {
    let src = format!("loss a = {}p{};\n", "sin(".repeat(1001), ")".repeat(1001));
    let d = parse(&src).expect_err("too deep");
    assert_eq!(d.kind, ErrorKind::TooDeep);
    assert_eq!(d.message, "this expression nests more than 1000 levels deep");
    // The innermost node past the limit: the call 1,000 levels up from `p`, i.e. the second.
    assert_eq!(d.span.start, "loss a = sin(".len());
}

#[test]
fn unknown_function_suggests_the_nearest_name() {
    let d = parse("loss a = sigmiod(p);").unwrap_err();
    assert_eq!(d.help.as_deref(), Some("did you mean `sigmoid`?"));
}

#[test]
fn errors_report_line_and_column() {
    let src = "let q = p;\n\nloss a = q +* y;\n";
    let d = parse(src).unwrap_err();
    assert_eq!(d.line_col(src), (3, 13));
    assert!(d.render("f.loss", src, false).contains("f.loss:3:13"));
}

const TOKENS: &[&str] = &[
    "loss", "let", "eps", "=", ";", "(", ")", ",", "+", "-", "*", "/", "^", "y", "p", "ln", "max", "1e-7", "2", "x",
    "#c\n", " ", "\n", "é", "$", "1e999",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let src = String::from_utf8_lossy(&bytes);
        if let Err(d) = parse(&src) {
            let _ = d.render("fuzz.loss", &src, false);
        }
    }

    #[test]
    fn token_soup_never_panics(picks in proptest::collection::vec(0..TOKENS.len(), 0..60)) {
        let src: String = picks.iter().map(|&i| TOKENS[i]).collect::<Vec<_>>().join(" ");
        if let Err(d) = parse(&src) {
            let _ = d.render("fuzz.loss", &src, false);
        }
    }
}
