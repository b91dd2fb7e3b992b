//! The operations side of template.yaml: every function's logs are kept for a set time and
//! every function has alarms on failed and throttled invocations and on running near its
//! timeout, every HTTP function on its 5xx answers, and the rest that API.md's "Running in
//! AWS" names (queues, stream, table, SES, SMS, webhook signatures, the cleanup's counts), all
//! told to a topic CloudWatch may publish to.

use crate::common::cfn;

use std::collections::BTreeMap;

use serde_json::{Value, json};

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

// What "Running in AWS" (API.md) asks of the alarms, read as data.

fn alarms(template: &Value) -> Vec<(&str, &Value)> {
    cfn::of_type(template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(name, alarm)| (name, &alarm["Properties"]))
        .collect()
}

/// The alarm `name`, checked to watch `metric` in `namespace` with `dimensions`.
fn alarm<'a>(template: &'a Value, name: &str, namespace: Value, metric: &str, dimensions: Value) -> &'a Value {
    let alarm = &cfn::resources(template).get(name).unwrap_or_else(|| panic!("{name}: an alarm"))["Properties"];
    assert_eq!(alarm["Namespace"], namespace, "{name}: namespace");
    assert_eq!(alarm["MetricName"], metric, "{name}: metric");
    assert_eq!(alarm["Dimensions"], dimensions, "{name}: dimensions");
    assert_eq!(alarm["AlarmActions"], json!([{"Ref": "AlarmTopic"}]), "{name}: tells the alarm topic");
    alarm
}

fn function_dimension(name: &str, function: &str) -> Value {
    json!([{"Name": name, "Value": {"Ref": function}}])
}

fn stack_namespace() -> Value {
    json!({"Ref": "AWS::StackName"})
}

fn is_http(function: &Value) -> bool {
    let properties = &function["Properties"];
    properties.get("FunctionUrlConfig").is_some()
        || properties["Events"].as_object().is_some_and(|events| events.values().any(|e| e["Type"] == "HttpApi"))
}

fn events_of_type<'a>(function: &'a Value, kind: &str) -> Vec<&'a Value> {
    function["Properties"]["Events"]
        .as_object()
        .map(|e| e.values().filter(|e| e["Type"] == kind).collect())
        .unwrap_or_default()
}

#[test]
fn every_function_alarms_near_its_timeout_and_every_http_function_on_its_5xx_answers() {
    let template = cfn::template();
    let global_timeout = template["Globals"]["Function"]["Timeout"].as_f64().expect("a global Timeout");
    assert_eq!(
        template["Globals"]["Function"]["Environment"]["Variables"]["METRICS_NAMESPACE"],
        json!({"Fn::If": ["IsLocalStack", {"Ref": "AWS::NoValue"}, {"Ref": "AWS::StackName"}]}),
        "the functions publish their metrics in the stack's namespace"
    );
    let mut http = 0;
    for (function, resource) in cfn::of_type(&template, "AWS::Serverless::Function") {
        let timeout_ms = resource["Properties"]["Timeout"].as_f64().unwrap_or(global_timeout) * 1000.0;
        let duration = alarm(
            &template,
            &format!("{function}DurationAlarm"),
            json!("AWS/Lambda"),
            "Duration",
            function_dimension("FunctionName", function),
        );
        let threshold = duration["Threshold"].as_f64().unwrap();
        assert!(
            (0.5 * timeout_ms..=0.95 * timeout_ms).contains(&threshold),
            "{function}: duration alarm at {threshold} ms, its timeout is {timeout_ms} ms"
        );
        assert_eq!(duration["Statistic"], "Maximum", "{function}: the slowest invocation");
        if is_http(resource) {
            http += 1;
            let answers = alarm(
                &template,
                &format!("{function}5xxAlarm"),
                stack_namespace(),
                "Responses5xx",
                function_dimension("Function", function),
            );
            assert_eq!(answers["Statistic"], "Sum", "{function}");
            assert_eq!(answers["TreatMissingData"], "notBreaching", "{function}: no traffic is no alarm");
        }
    }
    assert_eq!(http, 10, "the HTTP functions (API routes and the webhook's URL)");
}

#[test]
fn the_alarm_topic_is_one_cloudwatch_may_publish_to_and_someone_is_subscribed() {
    let template = cfn::template();
    let resources = cfn::resources(&template);
    assert_eq!(resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"], json!({"Ref": "AlarmTopicKey"}));
    let key = &resources["AlarmTopicKey"]["Properties"];
    assert_eq!(key["EnableKeyRotation"], true);
    let statements = key["KeyPolicy"]["Statement"].as_array().unwrap();
    let cloudwatch = statements
        .iter()
        .find(|s| s["Principal"]["Service"] == "cloudwatch.amazonaws.com")
        .expect("the key policy lets CloudWatch use the key");
    assert_eq!(cloudwatch["Action"], json!(["kms:Decrypt", "kms:GenerateDataKey*"]));
    assert_eq!(cloudwatch["Condition"]["StringEquals"]["aws:SourceAccount"], json!({"Ref": "AWS::AccountId"}));
    assert!(
        statements
            .iter()
            .any(|s| s["Principal"]["AWS"] == json!({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"})
                && s["Action"] == "kms:*"),
        "the account administers the key"
    );
    let (_, policy) = cfn::of_type(&template, "AWS::SNS::TopicPolicy")
        .into_iter()
        .find(|(_, p)| p["Properties"]["Topics"] == json!([{"Ref": "AlarmTopic"}]))
        .expect("a topic policy for the alarm topic");
    let publish = &policy["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(publish["Principal"]["Service"], "cloudwatch.amazonaws.com");
    assert_eq!(publish["Action"], "sns:Publish");
    assert_eq!(publish["Condition"]["StringEquals"]["aws:SourceAccount"], json!({"Ref": "AWS::AccountId"}));
    let subscription = &resources["AlarmEmailSubscription"];
    assert_eq!(subscription["Condition"], "HasAlarmEmail");
    assert_eq!(subscription["Properties"]["Protocol"], "email");
    assert_eq!(subscription["Properties"]["Endpoint"], json!({"Ref": "AlarmEmail"}));
}

#[test]
fn every_queue_is_encrypted_and_alarmed_and_every_asynchronous_path_fails_into_one() {
    let template = cfn::template();
    let alarms = alarms(&template);
    for (queue, resource) in cfn::of_type(&template, "AWS::SQS::Queue") {
        let properties = &resource["Properties"];
        assert!(
            properties["SqsManagedSseEnabled"] == true || properties.get("KmsMasterKeyId").is_some(),
            "{queue}: encrypted at rest (infra/checkov.yaml accepts CKV_AWS_27 for SQS-managed keys)"
        );
        let dimension = json!([{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]);
        assert!(
            alarms.iter().any(|(_, a)| a["MetricName"] == "ApproximateNumberOfMessagesVisible"
                && a["Dimensions"] == dimension
                && a["Threshold"] == 0),
            "{queue}: an alarm on any message in it"
        );
    }
    let queues: Vec<&str> = cfn::of_type(&template, "AWS::SQS::Queue").into_iter().map(|(q, _)| q).collect();
    let is_queue = |destination: &Value| matches!(cfn::intrinsic(destination), Some(("Fn::GetAtt", Value::Array(a))) if queues.contains(&a[0].as_str().unwrap_or("")) && a[1] == "Arn");
    for (function, resource) in cfn::of_type(&template, "AWS::Serverless::Function") {
        let asynchronous = ["SNS", "ScheduleV2", "Schedule", "S3", "EventBridgeRule"]
            .iter()
            .any(|kind| !events_of_type(resource, kind).is_empty());
        if asynchronous {
            let config = &resource["Properties"]["EventInvokeConfig"];
            assert!(is_queue(&config["DestinationConfig"]["OnFailure"]["Destination"]), "{function}: on-failure queue");
            assert!(config["MaximumRetryAttempts"].is_u64(), "{function}: retries chosen, not defaulted");
        }
        for stream in events_of_type(resource, "DynamoDB") {
            assert!(is_queue(&stream["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]), "{function}");
        }
        if !events_of_type(resource, "DynamoDB").is_empty() {
            alarm(
                &template,
                &format!("{function}IteratorAgeAlarm"),
                json!("AWS/Lambda"),
                "IteratorAge",
                function_dimension("FunctionName", function),
            );
        }
        for schedule in events_of_type(resource, "ScheduleV2") {
            assert!(
                is_queue(&schedule["Properties"]["DeadLetterConfig"]["Arn"]),
                "{function}: runs not started are kept"
            );
        }
    }
}

#[test]
fn the_alarms_running_in_aws_names_exist() {
    let template = cfn::template();
    let table = json!([{"Name": "TableName", "Value": {"Ref": "Table"}}]);
    alarm(&template, "TableReadThrottlesAlarm", json!("AWS/DynamoDB"), "ReadThrottleEvents", table.clone());
    alarm(&template, "TableWriteThrottlesAlarm", json!("AWS/DynamoDB"), "WriteThrottleEvents", table);
    alarm(&template, "SesBounceRateAlarm", json!("AWS/SES"), "Reputation.BounceRate", Value::Null);
    alarm(&template, "SesComplaintRateAlarm", json!("AWS/SES"), "Reputation.ComplaintRate", Value::Null);
    let sms = alarm(&template, "SmsSpendAlarm", json!("AWS/SNS"), "SMSMonthToDateSpentUSD", Value::Null);
    assert_eq!(sms["Threshold"], json!({"Ref": "SmsSpendAlarmUsd"}));
    alarm(&template, "WebhookSignatureFailuresAlarm", stack_namespace(), "WebhookSignatureFailures", Value::Null);
    let filter = &cfn::resources(&template)["WebhookSignatureFailures"]["Properties"];
    assert_eq!(filter["LogGroupName"], json!({"Ref": "WebhookFunctionLogGroup"}));
    assert_eq!(filter["MetricTransformations"][0]["MetricName"], "WebhookSignatureFailures");
    assert_eq!(filter["MetricTransformations"][0]["MetricNamespace"], stack_namespace());
    let logged = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/shared/src/api/webhook.rs")).unwrap();
    let pattern = filter["FilterPattern"].as_str().unwrap();
    let line = pattern.split('"').nth(1).expect("the filter matches a message");
    assert!(logged.contains(&format!("\"{line}\"")), "the webhook logs {line:?} on a bad signature");
    for metric in ["PaymentsUnsettled", "PaymentsUnrecovered", "OutboxAbandoned"] {
        let watched = alarm(
            &template,
            &format!("Cleanup{metric}Alarm"),
            stack_namespace(),
            metric,
            function_dimension("Function", "CleanupFunction"),
        );
        assert_eq!((&watched["Statistic"], &watched["Threshold"]), (&json!("Maximum"), &json!(0)), "{metric}");
    }
    // Losses after a transfer left unrecovered are counted by the webhook when they happen.
    let unrecovered = alarm(
        &template,
        "WebhookTransfersUnrecoveredAlarm",
        stack_namespace(),
        shared::payments::recovery::UNRECOVERED_METRIC,
        function_dimension("Function", "WebhookFunction"),
    );
    assert_eq!((&unrecovered["Statistic"], &unrecovered["Threshold"]), (&json!("Sum"), &json!(0)));
    for (name, alarm) in alarms(&template) {
        let namespace = alarm["Namespace"].as_str().unwrap_or("");
        assert!(!namespace.starts_with("Backend/"), "{name}: the metrics are in the stack's namespace now");
    }
}

/// What infra/checkov.yaml accepts for one resource holds for that one alone.
#[test]
fn only_the_webhook_has_a_function_url_and_only_ses_feedback_an_unencrypted_topic() {
    let template = cfn::template();
    let with_url: Vec<&str> = cfn::of_type(&template, "AWS::Serverless::Function")
        .into_iter()
        .filter(|(_, f)| f["Properties"].get("FunctionUrlConfig").is_some())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(with_url, ["WebhookFunction"], "CKV_AWS_258 (AuthType NONE) is accepted for the webhook only");
    for (topic, resource) in cfn::of_type(&template, "AWS::SNS::Topic") {
        assert!(
            topic == "SesFeedbackTopic" || resource["Properties"].get("KmsMasterKeyId").is_some(),
            "{topic}: encrypted (CKV_AWS_26 is accepted for SesFeedbackTopic only)"
        );
    }
}

#[test]
fn the_metrics_the_alarms_watch_are_the_ones_the_code_writes() {
    let template = cfn::template();
    let answers: Vec<&str> = shared::metrics::response_counts(200).iter().map(|(name, _)| *name).collect();
    let (cleanup, _) = shared::cleanup::Summary::default().metrics();
    let written: Vec<&str> = answers
        .into_iter()
        .chain(cleanup.iter().map(|(name, _)| *name))
        .chain([shared::payments::recovery::UNRECOVERED_METRIC])
        .collect();
    for (name, alarm) in alarms(&template) {
        if alarm["Namespace"] == stack_namespace() && name != "WebhookSignatureFailuresAlarm" {
            let metric = alarm["MetricName"].as_str().unwrap();
            assert!(written.contains(&metric), "{name} watches {metric}, which no function writes ({written:?})");
        }
    }
}
