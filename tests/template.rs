//! The operations side of template.yaml: every function's logs are kept for a set time and
//! every function has alarms on failed and throttled invocations, which go somewhere.

use std::collections::BTreeMap;

/// Top-level resources: logical id → its lines (the YAML is two-space indented).
fn resources() -> BTreeMap<String, String> {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    let body = template.split("\nResources:\n").nth(1).unwrap().split("\nOutputs:\n").next().unwrap();
    let mut resources = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in body.lines() {
        let is_name = line.len() > 2 && line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':');
        if is_name {
            if let Some((name, text)) = current.take() {
                resources.insert(name, text);
            }
            current = Some((line.trim().trim_end_matches(':').to_owned(), String::new()));
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    resources.extend(current);
    resources
}

fn of_type<'a>(resources: &'a BTreeMap<String, String>, kind: &str) -> Vec<(&'a String, &'a String)> {
    resources.iter().filter(|(_, text)| text.contains(&format!("    Type: {kind}\n"))).collect()
}

#[test]
fn every_function_has_a_log_group_with_retention_and_error_and_throttle_alarms() {
    let resources = resources();
    let functions = of_type(&resources, "AWS::Serverless::Function");
    assert!(functions.len() >= 12, "{:?}", functions.iter().map(|(n, _)| n).collect::<Vec<_>>());
    for (function, _) in functions {
        let logs = resources.get(&format!("{function}LogGroup")).unwrap_or_else(|| panic!("{function}: log group"));
        assert!(
            logs.contains(&format!("LogGroupName: !Sub /aws/lambda/${{{function}}}\n")),
            "{function}: its own log group"
        );
        assert!(logs.contains("RetentionInDays: !Ref LogRetentionDays"), "{function}: retention");
        for metric in ["Errors", "Throttles"] {
            let alarm = resources
                .get(&format!("{function}{metric}Alarm"))
                .unwrap_or_else(|| panic!("{function}: {metric} alarm"));
            assert!(alarm.contains(&format!("MetricName: {metric}\n")), "{function}: {metric}");
            assert!(alarm.contains(&format!("Value: !Ref {function}\n")), "{function}: {metric} of this function");
        }
    }
}

#[test]
fn every_alarm_notifies_and_every_log_group_expires() {
    let resources = resources();
    for (name, alarm) in of_type(&resources, "AWS::CloudWatch::Alarm") {
        assert!(alarm.contains("AlarmActions: [!Ref AlarmTopic]"), "{name} tells no one");
    }
    for (name, group) in of_type(&resources, "AWS::Logs::LogGroup") {
        assert!(group.contains("RetentionInDays:"), "{name} keeps logs forever");
    }
    let api = &resources["HttpApi"];
    assert!(api.contains("AccessLogSettings:") && api.contains("ThrottlingRateLimit:"), "API access logs and throttle");
}

/// The variables template.yaml declares: (name, set only on the local stack), from the
/// `Variables:` block that starts at `header` and is indented `indent` spaces.
fn variables(block: &str, indent: usize) -> Vec<(String, bool)> {
    let prefix = " ".repeat(indent);
    block
        .lines()
        .take_while(|line| line.starts_with(&prefix) || line.is_empty())
        .filter(|line| line.starts_with(&prefix) && !line[indent..].starts_with(' '))
        .filter_map(|line| line.trim().split_once(": "))
        .map(|(name, value)| (name.to_owned(), value.starts_with("!If [IsLocalStack")))
        .collect()
}

#[test]
fn the_sam_env_vars_file_names_exactly_the_templates_functions_and_variables() {
    let root = env!("CARGO_MANIFEST_DIR");
    let template = std::fs::read_to_string(format!("{root}/template.yaml")).unwrap();
    let global = template.split("\nGlobals:\n").nth(1).unwrap().split("      Variables:\n").nth(1).unwrap();
    let global = variables(global, 8);
    assert!(global.iter().any(|(name, local)| name == "AWS_ENDPOINT_URL" && *local), "declared, local only");
    let file = std::fs::read_to_string(format!("{root}/.local/sam-env.json"))
        .expect(".local/sam-env.json, which the stack writes (run through infra/test.sh)");
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    let resources = resources();
    let functions = of_type(&resources, "AWS::Serverless::Function");
    let listed: Vec<&String> = file.as_object().unwrap().keys().collect();
    assert_eq!(listed, functions.iter().map(|(name, _)| *name).collect::<Vec<_>>(), "the template's functions");
    for (function, text) in functions {
        let own = text.split("      Environment:\n        Variables:\n").nth(1).map(|b| variables(b, 10));
        let declared: Vec<(String, bool)> = global.iter().cloned().chain(own.unwrap_or_default()).collect();
        let given = file[function].as_object().unwrap();
        for (name, local_only) in &declared {
            assert!(*local_only || given.contains_key(name), "{function}: {name} has no local value");
        }
        for name in given.keys() {
            assert!(declared.iter().any(|(d, _)| d == name), "{function}: {name} is not in the template");
        }
    }
}

#[test]
fn the_local_invoke_profile_gives_every_parameter_without_a_default() {
    let root = env!("CARGO_MANIFEST_DIR");
    let template = std::fs::read_to_string(format!("{root}/template.yaml")).unwrap();
    let samconfig = std::fs::read_to_string(format!("{root}/samconfig.toml")).unwrap();
    let profile = samconfig.split("[default.local_invoke.parameters]").nth(1).expect("a local_invoke profile");
    let parameters = template.split("\nParameters:\n").nth(1).unwrap().split("\nConditions:\n").next().unwrap();
    let mut current: Option<(String, bool)> = None;
    let mut missing = Vec::new();
    for line in parameters.lines().chain(std::iter::once("  End:")) {
        if line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':') {
            if let Some((name, false)) = current.take() {
                missing.push(name);
            }
            current = Some((line.trim().trim_end_matches(':').to_owned(), false));
        } else if line.trim_start().starts_with("Default:")
            && let Some((_, has_default)) = current.as_mut()
        {
            *has_default = true;
        }
    }
    assert!(!missing.is_empty(), "the template has required parameters");
    for name in missing {
        assert!(profile.contains(&format!("\"{name}=")), "{name} has no value for sam local invoke");
    }
}
