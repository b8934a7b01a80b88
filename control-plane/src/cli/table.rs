//! `--table`: an answer of the admin API as a compact text table instead of JSON. A list
//! (`{"data": [...]}` or an array) is one row per item; an object is one row. Columns: the
//! identifying fields first (`LEADING`), then the others by name, leaving out those that are null
//! or empty in every row. Lists of names are joined with commas, other nested values are compact
//! JSON (cut at 60 characters), and control characters are escaped so that a value cannot break
//! the layout. Nothing else is cut: a key's secret, shown once, is shown whole.

use serde_json::Value;

const LEADING: &[&str] = &["id", "name", "key", "role", "team_id", "user_id", "at", "actor", "action", "target"];
const NESTED_WIDTH: usize = 60;

/// The table for `answer`, or `None` when it is not a list or an object of objects (print JSON).
pub fn render(answer: &Value) -> Option<String> {
    let rows: Vec<&serde_json::Map<String, Value>> = match answer {
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(items)) if o.len() == 1 => items.iter().map(Value::as_object).collect::<Option<_>>()?,
            _ => vec![o],
        },
        Value::Array(items) => items.iter().map(Value::as_object).collect::<Option<_>>()?,
        _ => return None,
    };
    let mut columns: Vec<&str> = Vec::new();
    for row in &rows {
        for (name, value) in row.iter() {
            if !is_empty(value) && !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    let rank = |c: &str| LEADING.iter().position(|l| *l == c).unwrap_or(LEADING.len());
    columns.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    if columns.is_empty() {
        return Some(if rows.is_empty() { "(none)\n".into() } else { String::new() });
    }
    let cells: Vec<Vec<String>> = rows.iter().map(|row| columns.iter().map(|c| cell(row.get(*c).unwrap_or(&Value::Null))).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).chain([c.chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |values: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = values.zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&mut columns.iter().copied());
    for row in &cells {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    Some(out)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        other => {
            let json = other.to_string();
            match json.char_indices().nth(NESTED_WIDTH) {
                Some((cut, _)) => format!("{}…", &json[..cut]),
                None => json,
            }
        }
    };
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render;

    #[test]
    fn lists_and_objects_become_aligned_rows() {
        let keys = json!({"data": [
            {"id": "key_1", "name": "ci", "models": ["a", "b"], "revoked_at": null, "tags": [], "metadata": {"x": 1}},
            {"id": "key_22", "name": "line\nbreak", "models": null, "revoked_at": 5, "tags": [], "metadata": null},
        ]});
        assert_eq!(
            render(&keys).unwrap(),
            "id      name         metadata  models  revoked_at\n\
             key_1   ci           {\"x\":1}   a,b     -\n\
             key_22  line\\nbreak  -         -       5\n"
        );
        let long = json!({"id": "a", "after": {"text": "x".repeat(100)}});
        let shown = render(&long).unwrap();
        assert!(shown.lines().nth(1).unwrap().ends_with(&format!("{{\"text\":\"{}…", "x".repeat(51))), "{shown}");
        assert_eq!(render(&json!({"id": "team_1", "name": "research"})).unwrap(), "id      name\nteam_1  research\n");
        assert_eq!(render(&json!({"data": []})).unwrap(), "(none)\n");
        assert_eq!(render(&json!("text")), None);
        assert_eq!(render(&json!([1, 2])), None);
    }
}
