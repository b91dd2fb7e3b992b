//! Reading template.yaml as data: the YAML parsed with serde_norway, CloudFormation's short
//! tags turned into the long form CloudFormation itself uses (`!Ref X` → `{"Ref": "X"}`,
//! `!GetAtt X.Arn` → `{"Fn::GetAtt": ["X", "Arn"]}`, `!Sub s` → `{"Fn::Sub": s}`, and so on
//! for every `!Name`), as serde_json values.
//!
//! Used by tests that need more than text: `mod common;` brings it as `common::cfn`, and a
//! test that needs nothing else of the harness can take it alone with
//! `#[path = "common/cfn.rs"] mod cfn;`.
#![allow(dead_code)]

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// template.yaml, parsed.
pub fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).expect("template.yaml");
    parse(&text)
}

/// A CloudFormation template (YAML, short tags allowed) as JSON values.
pub fn parse(text: &str) -> Value {
    let yaml: serde_norway::Value = serde_norway::from_str(text).expect("template.yaml is YAML");
    to_json(yaml)
}

fn to_json(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).expect("a YAML number is a JSON number"),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(key, value)| {
                    let key = match to_json(key) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(value))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = to_json(tagged.value);
            let long = match (name, value) {
                ("Ref", value) => return single("Ref", value),
                // `!GetAtt Resource.Attribute` (the attribute may itself hold dots).
                ("GetAtt", Value::String(s)) => {
                    let (resource, attribute) = s.split_once('.').expect("!GetAtt Resource.Attribute");
                    ("Fn::GetAtt".to_owned(), Value::Array(vec![resource.into(), attribute.into()]))
                }
                ("Condition", value) => ("Condition".to_owned(), value),
                (name, value) => (format!("Fn::{name}"), value),
            };
            single(&long.0, long.1)
        }
    }
}

fn single(key: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

/// The template's resources.
pub fn resources(template: &Value) -> &Map<String, Value> {
    template["Resources"].as_object().expect("Resources")
}

/// The resources of type `kind`: (logical id, resource).
pub fn of_type<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    resources(template).iter().filter(|(_, r)| r["Type"] == kind).map(|(name, r)| (name.as_str(), r)).collect()
}

/// The intrinsic function `value` is, if it is one: (`Ref`, `Fn::Sub`..., its argument).
pub fn intrinsic(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (name, argument) = map.iter().next()?;
    (name == "Ref" || name == "Condition" || name.starts_with("Fn::")).then_some((name.as_str(), argument))
}

/// `!Ref AWS::NoValue`: the property (or list item) is left out.
pub fn is_no_value(value: &Value) -> bool {
    matches!(intrinsic(value), Some(("Ref", Value::String(name))) if name == "AWS::NoValue")
}

/// What `value` may be once CloudFormation has resolved its conditions: every branch of each
/// `!If` (without `AWS::NoValue`), the value itself otherwise.
pub fn branches(value: &Value) -> Vec<&Value> {
    match intrinsic(value) {
        Some(("Fn::If", Value::Array(args))) if args.len() == 3 => args[1..].iter().flat_map(branches).collect(),
        _ if is_no_value(value) => Vec::new(),
        _ => vec![value],
    }
}

/// A property that takes one item or a list of them (`Action`, `Resource`): each item, with
/// `!If` branches flattened.
pub fn items(value: &Value) -> Vec<&Value> {
    branches(value)
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(list) => list.iter().flat_map(branches).collect(),
            other => vec![other],
        })
        .collect()
}

/// The logical ids (resources, parameters, pseudo parameters) `value` refers to, through
/// `!Ref`, `!GetAtt` and `${...}` in `!Sub`.
pub fn references(value: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    collect_references(value, &mut found);
    found
}

fn collect_references(value: &Value, found: &mut BTreeSet<String>) {
    match intrinsic(value) {
        Some(("Ref", Value::String(name))) => {
            found.insert(name.clone());
        }
        Some(("Fn::GetAtt", Value::Array(args))) => {
            if let Some(Value::String(name)) = args.first() {
                found.insert(name.clone());
            }
        }
        Some(("Fn::Sub", argument)) => {
            let (text, variables) = match argument {
                Value::Array(args) => (args.first().and_then(Value::as_str).unwrap_or(""), args.get(1)),
                other => (other.as_str().unwrap_or(""), None),
            };
            for name in sub_variables(text) {
                let defined = variables.and_then(|v| v.get(&name)).is_some();
                if !defined {
                    found.insert(name.split('.').next().unwrap_or(&name).to_owned());
                }
            }
            if let Some(variables) = variables {
                collect_references(variables, found);
            }
        }
        _ => match value {
            Value::Array(list) => list.iter().for_each(|v| collect_references(v, found)),
            Value::Object(map) => map.values().for_each(|v| collect_references(v, found)),
            _ => {}
        },
    }
}

/// The `${Name}` and `${Resource.Attribute}` variables of a `!Sub` string (not `${!Literal}`).
pub fn sub_variables(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            names.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    names
}

/// The literal text of a string or a `!Sub` string (variables left as `${...}`); `None` for
/// other intrinsics (`!Ref`, `!GetAtt`...).
pub fn literal_text(value: &Value) -> Option<&str> {
    match (value, intrinsic(value)) {
        (Value::String(s), _) => Some(s),
        (_, Some(("Fn::Sub", Value::String(s)))) => Some(s),
        (_, Some(("Fn::Sub", Value::Array(args)))) => args.first().and_then(Value::as_str),
        _ => None,
    }
}
