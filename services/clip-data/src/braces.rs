//! Brace patterns of webdataset shard lists: `"shards/{000..150}.tar"`, `"{a,b}/x.tar"`, nested.

/// Expands every `{a..b}` (zero-padded to the width of `a`) and `{x,y,z}` group, left to right.
pub fn brace_expand(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let mut depth = 0;
    let mut close = None;
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![pattern.to_string()];
    };
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let alternatives: Vec<String> = match body.split_once("..") {
        Some((a, b)) if !body.contains(',') && a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok() => {
            let (x, y) = (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap());
            let width = a.len();
            let range: Vec<u64> = if x <= y { (x..=y).collect() } else { (y..=x).rev().collect() };
            range.into_iter().map(|n| format!("{n:0width$}")).collect()
        }
        _ => split_top_level(body),
    };
    let mut out = Vec::new();
    for alt in alternatives {
        for rest in brace_expand(&format!("{alt}{tail}")) {
            out.push(format!("{head}{rest}"));
        }
    }
    out
}

fn split_top_level(body: &str) -> Vec<String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(body[start..i].to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(body[start..].to_string());
    parts
}

#[cfg(test)]
mod tests {
    use super::brace_expand;

    #[test]
    fn expands_ranges_lists_and_nesting() {
        assert_eq!(brace_expand("s3://b/{000..002}.tar"), vec!["s3://b/000.tar", "s3://b/001.tar", "s3://b/002.tar"]);
        assert_eq!(brace_expand("{a,b}/{1..2}"), vec!["a/1", "a/2", "b/1", "b/2"]);
        assert_eq!(brace_expand("x{a,{b,c}}"), vec!["xa", "xb", "xc"]);
        assert_eq!(brace_expand("plain.tar"), vec!["plain.tar"]);
        assert_eq!(brace_expand("{8..10}"), vec!["8", "9", "10"]);
    }
}
