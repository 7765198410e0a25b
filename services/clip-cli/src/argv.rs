//! The two argv transformations: `normalize` (what users type -> what the parser reads: `--flag-name` becomes
//! `--flag_name`) and `render` (typed args -> the argv a child process gets, e.g. the operator's pods). `render` is
//! the parser's inverse: `parse(render(args)) == args` (tested for every subcommand).

use crate::CommandArgs;
use clap::ArgAction;
use serde_json::Value;
use std::ffi::OsString;

/// Rewrites `--kebab-case` flags of the chosen subcommand into their `--snake_case` names (also in `--flag=value`),
/// so every flag accepts both spellings without an alias each. Only tokens that then name a real flag change, and
/// nothing after a bare `--`.
pub fn normalize<I, T>(argv: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let root = crate::command();
    let Some(sub_at) = argv.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')).map(|i| i + 1) else {
        return argv;
    };
    let Some(sub) = root.find_subcommand(argv[sub_at].to_string_lossy().as_ref()) else {
        return argv;
    };
    let longs: Vec<&str> = sub.get_arguments().filter_map(|a| a.get_long()).collect();
    let mut out = argv[..=sub_at].to_vec();
    let mut rest = argv[sub_at + 1..].iter();
    for token in rest.by_ref() {
        let text = token.to_string_lossy();
        if text == "--" {
            out.push(token.clone());
            break;
        }
        out.push(match snake_flag(&text, &longs) {
            Some(rewritten) => rewritten.into(),
            None => token.clone(),
        });
    }
    out.extend(rest.cloned());
    out
}

/// `--input-dataset[=v]` -> `--input_dataset[=v]` when that is one of `longs`.
fn snake_flag(token: &str, longs: &[&str]) -> Option<String> {
    let body = token.strip_prefix("--")?;
    let (name, value) = match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    };
    if !name.contains('-') {
        return None;
    }
    let snake = name.replace('-', "_");
    longs.contains(&snake.as_str()).then(|| match value {
        Some(v) => format!("--{snake}={v}"),
        None => format!("--{snake}"),
    })
}

/// The argv of `args`: the subcommand name, then in declaration order every flag whose value differs from its
/// default (required flags, lists and the `pinned` flags always), so the parser reads back exactly `args`.
/// Pinning keeps a value explicit whatever the default of the binary that runs it (the operator pins what its
/// specs set). A pinned name that is no flag of `T` is a programming error and panics.
pub fn render<T: CommandArgs>(args: &T, pinned: &[&str]) -> Vec<String> {
    let values = match serde_json::to_value(args) {
        Ok(Value::Object(values)) => values,
        other => unreachable!("args structs serialize to objects, got {other:?}"),
    };
    let command = T::augment_args(clap::Command::new(T::NAME));
    for name in pinned {
        assert!(command.get_arguments().any(|a| a.get_id() == name), "{} has no flag {name:?} to pin", T::NAME);
    }
    let mut argv = vec![T::NAME.to_string()];
    for arg in command.get_arguments() {
        let (Some(long), Some(value)) = (arg.get_long(), values.get(arg.get_id().as_str())) else { continue };
        let flag = format!("--{long}");
        match (arg.get_action(), value) {
            (_, Value::Null) => {}
            (ArgAction::SetTrue, Value::Bool(on)) => {
                if *on {
                    argv.push(flag);
                }
            }
            (_, Value::Array(items)) => {
                if !items.is_empty() {
                    push_value(&mut argv, flag, items.iter().map(scalar).collect::<Vec<_>>().join(","));
                }
            }
            (_, value) => {
                let text = scalar(value);
                let default: Vec<String> =
                    arg.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
                if default != [text.as_str()] || pinned.contains(&arg.get_id().as_str()) {
                    push_value(&mut argv, flag, text);
                }
            }
        }
    }
    argv
}

/// `--flag value`, or `--flag=value` for a value the parser would otherwise take for a flag (`-x`, `--y`).
fn push_value(argv: &mut Vec<String>, flag: String, value: String) {
    if value.starts_with('-') {
        argv.push(format!("{flag}={value}"));
    } else {
        argv.extend([flag, value]);
    }
}

/// One value as the parser reads it: strings verbatim, numbers as Rust prints them (`10`, not `10.0`).
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(|f| f.to_string()).unwrap_or_default(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(argv: Vec<OsString>) -> Vec<String> {
        argv.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn kebab_flags_become_snake_case_and_nothing_else_changes() {
        let argv = normalize([
            "clip-retrieval",
            "inference",
            "--input-dataset",
            "a-b",
            "--output-folder=x-y",
            "--enable_text",
            "--not-a-flag",
            "--",
            "--batch-size",
        ]);
        assert_eq!(
            strings(argv),
            [
                "clip-retrieval",
                "inference",
                "--input_dataset",
                "a-b",
                "--output_folder=x-y",
                "--enable_text",
                "--not-a-flag",
                "--",
                "--batch-size"
            ]
        );
    }

    #[test]
    fn subcommand_aliases_and_unknown_subcommands_pass_through() {
        let argv = normalize(["clip-retrieval", "index-combiner", "--output-folder", "o"]);
        assert_eq!(strings(argv), ["clip-retrieval", "index-combiner", "--output_folder", "o"]);
        let argv = normalize(["clip-retrieval", "--help"]);
        assert_eq!(strings(argv), ["clip-retrieval", "--help"]);
        let argv = normalize(["clip-retrieval", "nope", "--output-folder"]);
        assert_eq!(strings(argv), ["clip-retrieval", "nope", "--output-folder"]);
    }
}
