//! The child pods' command lines: the typed args a spec renders into, with its `extraArgs` appended, the whole
//! checked by the CLI's own parser, so that a spec the binary would refuse fails the resource before any pod exists
//! (`Failed`, reason `InvalidSpec`) instead of crash-looping one.

use crate::{Error, Result};
use clip_cli::CommandArgs;

/// `args` as argv (the `pinned` flags written even at their default), then `extra` (kebab-case flags rewritten
/// as the binary reads them), parsed back by the CLI.
/// `extra` may not name a flag the operator writes: list flags would silently append to the operator's value.
pub fn render<T: CommandArgs>(args: &T, pinned: &[&str], extra: &[String]) -> Result<Vec<String>> {
    let mut argv = args.to_argv_pinning(pinned);
    let written: Vec<String> = argv.iter().filter_map(|a| flag_name(a)).collect();
    if let Some(clash) = extra.iter().filter_map(|a| flag_name(a)).find(|f| written.contains(f)) {
        return Err(Error::InvalidSpec(format!(
            "extraArgs sets --{clash}, which the operator writes from the spec; set it there instead"
        )));
    }
    argv.extend(extra.iter().cloned());
    // The pods get the canonical spelling (`--flag_name`), which every version of the binary parses.
    let normalized = clip_cli::argv::normalize(std::iter::once("clip-retrieval".to_string()).chain(argv));
    let argv: Vec<String> = normalized[1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
    T::parse_flags(&argv[1..]).map_err(|e| {
        let text = e.to_string();
        let reason = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
        Error::InvalidSpec(format!("extraArgs {extra:?}: `clip-retrieval {}` refuses them: {reason}", T::NAME))
    })?;
    Ok(argv)
}

/// Adds `name` to `pins` when the spec sets it.
pub fn pin_if(pins: &mut Vec<&'static str>, set: bool, name: &'static str) {
    if set {
        pins.push(name);
    }
}

/// `--flag_name` of a token (`--flag-name=v` too), snake case.
fn flag_name(token: &str) -> Option<String> {
    let body = token.strip_prefix("--")?;
    let name = body.split_once('=').map_or(body, |(n, _)| n);
    (!name.is_empty()).then(|| name.replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clip_cli::BackArgs;

    fn extra(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn extra_args_the_cli_takes_are_appended() {
        let argv = render(&BackArgs::new("/c.json"), &["port"], &extra(&["--search-threads=4"])).unwrap();
        assert_eq!(argv.last().unwrap(), "--search_threads=4", "written in the canonical spelling");
        assert_eq!(argv[0], "back");
    }

    #[test]
    fn extra_args_the_cli_refuses_are_an_invalid_spec_naming_them() {
        let err = render(&BackArgs::new("/c.json"), &[], &extra(&["--no_such_flag"])).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        let message = err.to_string();
        assert!(
            message.contains(r#"extraArgs ["--no_such_flag"]: `clip-retrieval back` refuses them: unexpected argument '--no_such_flag'"#),
            "{message}"
        );
        let bad_value = render(&BackArgs::new("/c.json"), &[], &extra(&["--max_num_images", "many"])).unwrap_err();
        assert!(bad_value.to_string().contains("invalid value 'many'"), "{bad_value}");
    }

    #[test]
    fn extra_args_may_not_override_what_the_operator_writes() {
        let err = render(&BackArgs::new("/c.json"), &["port"], &extra(&["--port=80"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid spec: extraArgs sets --port, which the operator writes from the spec; set it there instead"
        );
        let kebab = render(&BackArgs::new("/c.json"), &[], &extra(&["--indices-paths", "/x"])).unwrap_err();
        assert!(kebab.to_string().contains("--indices_paths"), "{kebab}");
    }
}
