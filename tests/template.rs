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
