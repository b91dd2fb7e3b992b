//! Least privilege, proven: every function's role in template.yaml allows only the AWS
//! actions its code can call, on resources the template names.
//!
//! What a function can call follows from the features of `shared` it turns on (its
//! `functions/<name>/Cargo.toml`; tests/api/features.rs proves each links only those services),
//! mapped to actions by [`ACTIONS_BY_FEATURE`] below. Each statement of a function's
//! `Policies` must:
//! - name only actions its features allow (no wildcard actions, no `NotAction`);
//! - name resources of the actions' own service, each a `!Ref`, `!GetAtt` or `!Sub` of what
//!   the template declares (the table and its indexes, the secrets, the topics, the SES
//!   identity and configuration set, the push platform applications, a destination queue);
//! - carry, when a resource is or holds `*`, or the statement uses `NotResource`, a `Sid`
//!   starting with `Wildcard` that says why in its name (`WildcardSmsHasNoArn`). That is the
//!   convention: a Sid travels with the policy into IAM, where a YAML comment does not.
//!
//! What SAM adds to each role on its own is not in `Policies` and not checked here (checkov
//! scans the transformed template): CloudWatch Logs (AWSLambdaBasicExecutionRole), X-Ray
//! (`Tracing: Active`), the stream reads of a DynamoDB event, and `sqs:SendMessage` to the
//! on-failure destinations it is given.

use crate::common::cfn;

use std::collections::BTreeSet;

use serde_json::Value;
use shared::secrets::Part;

/// What every function may call: its table (the `store`) and its secrets (`secrets`; which
/// ones, `every_function_may_read_exactly_the_secrets_its_main_declares` says).
const ALWAYS: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    // Each item of a TransactWriteItems is authorised as its own action, a condition check too.
    "dynamodb:ConditionCheckItem",
    "dynamodb:Query",
    "secretsmanager:GetSecretValue",
];

/// What each of `shared`'s features lets a function call (shared/Cargo.toml).
const ACTIONS_BY_FEATURE: &[(&str, &[&str])] = &[
    // SES v2 SendEmail (shared/src/notify/mailer.rs).
    ("mail", &["ses:SendEmail"]),
    // Events, SMS and push (shared/src/notify/events.rs, push.rs).
    ("sns", &["sns:Publish", "sns:CreatePlatformEndpoint", "sns:SetEndpointAttributes", "sns:DeleteEndpoint"]),
    // Stripe, over HTTPS: no AWS action.
    ("payments", &[]),
];

/// Parameters that hold ARNs, and their service.
const ARN_PARAMETERS: &[(&str, &str)] = &[("PushFcmApplicationArn", "sns"), ("PushApnsApplicationArn", "sns")];

/// The service of each resource type a policy may name.
const SERVICE_OF_TYPE: &[(&str, &str)] = &[
    ("AWS::DynamoDB::Table", "dynamodb"),
    ("AWS::SecretsManager::Secret", "secretsmanager"),
    ("AWS::SNS::Topic", "sns"),
    ("AWS::SQS::Queue", "sqs"),
    ("AWS::SES::ConfigurationSet", "ses"),
];

/// What a function's code can use, read from its crate.
struct Facts {
    features: Vec<String>,
    /// The secrets its main declares (`Part::Stripe`, ...): the only ones it reads.
    secret_parts: Vec<Part>,
}

impl Facts {
    fn reads_secret(&self) -> bool {
        !self.secret_parts.is_empty()
    }
}

/// The function's crate: `functions/<name>` (its CodeUri).
fn facts_on_disk(function: &str, resource: &Value) -> Facts {
    let code = resource["Properties"]["CodeUri"].as_str().unwrap_or_else(|| panic!("{function}: CodeUri"));
    let root = env!("CARGO_MANIFEST_DIR");
    let manifest =
        std::fs::read_to_string(format!("{root}/{code}/Cargo.toml")).unwrap_or_else(|e| panic!("{code}: {e}"));
    let main = std::fs::read_to_string(format!("{root}/{code}/src/main.rs")).unwrap_or_else(|e| panic!("{code}: {e}"));
    Facts { features: shared_features(&manifest), secret_parts: declared_parts(&main) }
}

/// The secrets a main declares: every `Part::<Name>` in it.
fn declared_parts(main: &str) -> Vec<Part> {
    let mut parts: Vec<Part> = main
        .split("Part::")
        .skip(1)
        .map(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphanumeric).collect();
            *Part::ALL.iter().find(|p| format!("{p:?}") == name).unwrap_or_else(|| panic!("Part::{name} is no part"))
        })
        .collect();
    parts.sort();
    parts.dedup();
    parts
}

/// The template's resource for a part's secret: `PublicKeys` is `PublicKeysSecret`.
fn secret_resource(part: Part) -> String {
    format!("{part:?}Secret")
}

/// The features a manifest turns on for `shared` (`shared = { workspace = true, features =
/// ["mail", "sns"] }`, or none for `shared.workspace = true`).
fn shared_features(manifest: &str) -> Vec<String> {
    let line = manifest
        .lines()
        .find(|l| l.starts_with("shared =") || l.starts_with("shared.") || l.starts_with("shared="))
        .expect("a dependency on shared");
    let Some((_, list)) = line.split_once("features") else { return Vec::new() };
    let list = list.split_once('[').and_then(|(_, l)| l.split_once(']')).map(|(l, _)| l).unwrap_or("");
    list.split(',').map(|f| f.trim().trim_matches('"').to_owned()).filter(|f| !f.is_empty()).collect()
}

fn allowed_actions(function: &str, facts: &Facts) -> BTreeSet<&'static str> {
    let mut allowed: BTreeSet<&str> = ALWAYS.iter().copied().collect();
    if !facts.reads_secret() {
        allowed.remove("secretsmanager:GetSecretValue");
    }
    for feature in &facts.features {
        let (_, actions) = ACTIONS_BY_FEATURE.iter().find(|(name, _)| name == feature).unwrap_or_else(|| {
            panic!("{function}: feature {feature} is not in ACTIONS_BY_FEATURE; say what it may call")
        });
        allowed.extend(actions.iter().copied());
    }
    allowed
}

/// Queues the function's failures are sent to: its EventInvokeConfig's and its event source
/// mappings' on-failure destinations.
fn destination_queues(resource: &Value) -> BTreeSet<String> {
    let properties = &resource["Properties"];
    let mut destinations = vec![&properties["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"]];
    if let Some(events) = properties["Events"].as_object() {
        destinations.extend(events.values().map(|e| &e["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]));
    }
    destinations.into_iter().flat_map(cfn::references).collect()
}

/// The service of the resource a policy names, or why it names none the template declares.
fn service_of(template: &Value, resource: &Value) -> Result<String, String> {
    let resources = cfn::resources(template);
    let parameters = template["Parameters"].as_object().cloned().unwrap_or_default();
    let of_logical_id = |name: &str| -> Result<String, String> {
        if let Some(declared) = resources.get(name) {
            let kind = declared["Type"].as_str().unwrap_or("");
            return SERVICE_OF_TYPE
                .iter()
                .find(|(t, _)| *t == kind)
                .map(|(_, s)| (*s).to_owned())
                .ok_or_else(|| format!("{name} is a {kind}, which no policy here should name"));
        }
        if parameters.contains_key(name) {
            return ARN_PARAMETERS
                .iter()
                .find(|(p, _)| *p == name)
                .map(|(_, s)| (*s).to_owned())
                .ok_or_else(|| format!("parameter {name} is not an ARN (ARN_PARAMETERS)"));
        }
        Err(format!("{name} is not declared in the template"))
    };
    for name in cfn::references(resource) {
        if !name.starts_with("AWS::") && !resources.contains_key(&name) && !parameters.contains_key(&name) {
            return Err(format!("{resource} refers to {name}, which the template does not declare"));
        }
    }
    match cfn::intrinsic(resource) {
        Some(("Ref", Value::String(name))) => of_logical_id(name),
        Some(("Fn::GetAtt", Value::Array(args))) => of_logical_id(args[0].as_str().unwrap_or("")),
        Some(("Fn::Sub", _)) => {
            let text = cfn::literal_text(resource).unwrap_or("");
            if let Some(rest) = text.strip_prefix("arn:${AWS::Partition}:") {
                return Ok(rest.split(':').next().unwrap_or("").to_owned());
            }
            if let Some(rest) = text.strip_prefix("${") {
                let variable = rest.split('}').next().unwrap_or("");
                return of_logical_id(variable.split('.').next().unwrap_or(""));
            }
            Err(format!("{text}: an ARN starts with arn:${{AWS::Partition}}: or a resource's ${{X.Arn}}"))
        }
        _ if resource == "*" => Ok("*".to_owned()),
        _ => Err(format!("{resource}: name resources with !Ref, !GetAtt or !Sub of what the template declares")),
    }
}

/// Everything wrong with the functions' policies in `template`, as readable lines.
fn violations(template: &Value, facts: &dyn Fn(&str, &Value) -> Facts) -> Vec<String> {
    let mut found = Vec::new();
    for (function, resource) in cfn::of_type(template, "AWS::Serverless::Function") {
        let facts = facts(function, resource);
        let allowed = allowed_actions(function, &facts);
        let queues = destination_queues(resource);
        let mut problem = |what: String| found.push(format!("{function}: {what}"));
        let Some(policies) = resource["Properties"]["Policies"].as_array() else {
            problem("no Policies list".into());
            continue;
        };
        for policy in policies {
            let Some(statements) = policy.get("Statement").and_then(Value::as_array) else {
                problem(format!(
                    "{policy}: only inline statements (a managed policy or SAM policy template hides what it allows)"
                ));
                continue;
            };
            for statement in statements.iter().flat_map(cfn::branches) {
                let sid = statement["Sid"].as_str().unwrap_or("");
                let explained = sid.starts_with("Wildcard") && sid.len() > "Wildcard".len();
                if statement["Effect"] != "Allow" {
                    continue;
                }
                if statement.get("NotAction").is_some() {
                    problem(format!("NotAction allows nearly everything: {statement}"));
                }
                let actions: Vec<&str> =
                    cfn::items(&statement["Action"]).into_iter().filter_map(Value::as_str).collect();
                if actions.is_empty() {
                    problem(format!("a statement without actions: {statement}"));
                }
                let resources = match (statement.get("Resource"), statement.get("NotResource")) {
                    (Some(r), None) => cfn::items(r),
                    (None, Some(r)) => {
                        if !explained {
                            problem(format!("NotResource without a Wildcard… Sid saying why: {statement}"));
                        }
                        // What the statement allows is outside these: their service is what counts.
                        cfn::items(r)
                    }
                    _ => {
                        problem(format!("Resource or NotResource, exactly one: {statement}"));
                        Vec::new()
                    }
                };
                for action in &actions {
                    // sqs:SendMessage only for a function with destinations (and to them, below).
                    let to_its_destination = *action == "sqs:SendMessage" && !queues.is_empty();
                    if !allowed.contains(action) && !to_its_destination {
                        problem(format!("{action} is not something its features ({:?}) can call", facts.features));
                    }
                }
                for resource in resources {
                    let text = cfn::literal_text(resource).unwrap_or("");
                    let not_resource = statement.get("NotResource").is_some();
                    if (resource == "*" || text.contains('*')) && !explained && !not_resource {
                        problem(format!("{resource} is a wildcard without a Wildcard… Sid saying why"));
                    }
                    let service = match service_of(template, resource) {
                        Ok(service) => service,
                        Err(why) => {
                            problem(why);
                            continue;
                        }
                    };
                    for action in &actions {
                        let action_service = action.split(':').next().unwrap_or("");
                        if service != "*" && action_service != service {
                            problem(format!("{action} on {resource}, a resource of {service}"));
                        }
                        if *action == "sqs:SendMessage" && !cfn::references(resource).iter().any(|q| queues.contains(q))
                        {
                            problem(format!(
                                "sqs:SendMessage to {resource}, which is not one of its destinations {queues:?}"
                            ));
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_function_may_call_only_what_it_links_on_named_resources() {
    let template = cfn::template();
    let functions = cfn::of_type(&template, "AWS::Serverless::Function");
    assert!(functions.len() >= 12, "the template's functions were read: {}", functions.len());
    let found = violations(&template, &facts_on_disk);
    assert!(found.is_empty(), "least privilege:\n{}", found.join("\n"));
}

/// The function's inline statements that allow `action`.
fn allowing<'a>(resource: &'a Value, action: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    resource["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|policy| policy.get("Statement").and_then(Value::as_array))
        .flatten()
        .flat_map(cfn::branches)
        .filter(move |statement| {
            statement["Effect"] == "Allow" && cfn::items(&statement["Action"]).iter().any(|a| *a == action)
        })
}

/// What is wrong with the secrets a function may read and is told of: it must be allowed
/// `GetSecretValue` on exactly the secrets its main declares (one it reads but may not
/// answers 500 in AWS, while moto, which enforces no IAM, lets every local test pass), and
/// be given each one's variable, and no other secret's.
fn secret_violations(function: &str, resource: &Value, parts: &[Part]) -> Vec<String> {
    let mut found = Vec::new();
    let may_read: BTreeSet<String> = allowing(resource, "secretsmanager:GetSecretValue")
        .flat_map(|statement| cfn::references(&statement["Resource"]))
        .collect();
    let declared: BTreeSet<String> = parts.iter().map(|&p| secret_resource(p)).collect();
    for extra in may_read.difference(&declared) {
        found.push(format!("{function}: may read {extra}, which its main does not declare"));
    }
    for missing in declared.difference(&may_read) {
        found.push(format!("{function}: reads {missing} (its main declares it) but its role may not"));
    }
    let variables = resource["Properties"]["Environment"]["Variables"].as_object().cloned().unwrap_or_default();
    for &part in Part::ALL {
        let told = variables.get(part.env()).map(cfn::references).unwrap_or_default();
        match (parts.contains(&part), told.contains(&secret_resource(part))) {
            (true, false) => found.push(format!("{function}: {} must name {}", part.env(), secret_resource(part))),
            (false, _) if variables.contains_key(part.env()) => {
                found.push(format!("{function}: is told {}, a secret it does not read", part.env()))
            }
            _ => {}
        }
    }
    found
}

/// Each function reads exactly the secrets its main declares, and is told where they are.
#[test]
fn every_function_may_read_exactly_the_secrets_its_main_declares() {
    let template = cfn::template();
    let mut found = Vec::new();
    for (function, resource) in cfn::of_type(&template, "AWS::Serverless::Function") {
        found.extend(secret_violations(function, resource, &facts_on_disk(function, resource).secret_parts));
    }
    assert!(found.is_empty(), "secrets:\n{}", found.join("\n"));
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    for part in Part::ALL {
        assert!(globals.get(part.env()).is_none(), "{} in Globals would tell every function", part.env());
    }
}

/// Who reads what (docs/architecture.md, "Secrets"): the private signing keys only the function that issues
/// tokens; the webhook secrets only the webhook; the Stripe key only functions that call
/// Stripe (the `payments` feature); the notifier its sealing and unsubscribe keys and never
/// a token-signing key.
#[test]
fn secrets_are_read_only_by_the_functions_that_need_them() {
    let template = cfn::template();
    let readers = |part: Part| -> Vec<String> {
        cfn::of_type(&template, "AWS::Serverless::Function")
            .into_iter()
            .filter(|(function, resource)| facts_on_disk(function, resource).secret_parts.contains(&part))
            .map(|(function, _)| function.to_owned())
            .collect()
    };
    assert_eq!(readers(Part::Signing), ["LoginFunction"], "one function issues access tokens");
    assert_eq!(readers(Part::Webhook), ["WebhookFunction"]);
    for (function, resource) in cfn::of_type(&template, "AWS::Serverless::Function") {
        let facts = facts_on_disk(function, resource);
        if facts.secret_parts.contains(&Part::Stripe) {
            assert!(facts.features.iter().any(|f| f == "payments"), "{function} reads the Stripe key");
        }
    }
    let notifier = facts_on_disk("NotifyFunction", &cfn::resources(&template)["NotifyFunction"]).secret_parts;
    assert_eq!(notifier, [Part::Outbox, Part::Unsubscribe]);
    // Every part has its secret in the template, and the template no secret without a part.
    let mut secrets: Vec<String> =
        cfn::of_type(&template, "AWS::SecretsManager::Secret").into_iter().map(|(name, _)| name.to_owned()).collect();
    secrets.sort();
    let mut parts: Vec<String> = Part::ALL.iter().map(|&p| secret_resource(p)).collect();
    parts.sort();
    assert_eq!(secrets, parts);
}

/// The local stack provisions the same secrets, each with the same fields
/// (infra/stack.py, `SECRET_PARTS`).
#[test]
fn the_local_stack_provisions_each_part_with_its_fields() {
    let stack = std::fs::read_to_string(format!("{}/infra/stack.py", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let table = stack.split("SECRET_PARTS = [").nth(1).and_then(|t| t.split("\n]").next()).expect("SECRET_PARTS");
    let rows: Vec<&str> = table.lines().map(str::trim).filter(|l| l.starts_with('(')).collect();
    assert_eq!(rows.len(), Part::ALL.len(), "{table}");
    for &part in Part::ALL {
        let row = rows.iter().find(|r| r.starts_with(&format!("(\"{}\"", part.env()))).unwrap_or_else(|| {
            panic!("infra/stack.py provisions no secret for {}", part.env());
        });
        let fields = row.split_once('[').and_then(|(_, f)| f.split_once(']')).map(|(f, _)| f).unwrap();
        let fields: Vec<&str> = fields.split(',').map(|f| f.trim().trim_matches('"')).collect();
        assert_eq!(fields, part.fields(), "{row}");
    }
}

#[test]
fn a_secret_read_but_not_granted_or_granted_but_not_read_is_caught() {
    let template: Value = cfn::parse(
        r#"
Resources:
  StripeSecret: {Type: AWS::SecretsManager::Secret}
  OutboxSecret: {Type: AWS::SecretsManager::Secret}
  SigningSecret: {Type: AWS::SecretsManager::Secret}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          STRIPE_SECRET_ID: !Ref StripeSecret
          SIGNING_SECRET_ID: !Ref SigningSecret
      Policies:
        - Statement:
            - Effect: Allow
              Action: [secretsmanager:GetSecretValue]
              Resource: [!Ref StripeSecret, !Ref SigningSecret]
"#,
    );
    let resource = &cfn::resources(&template)["Fn"];
    let found = secret_violations("Fn", resource, &[Part::Stripe, Part::Outbox]);
    let has = |needle: &str| found.iter().any(|line| line.contains(needle));
    assert!(has("Fn: may read SigningSecret, which its main does not declare"), "{found:#?}");
    assert!(has("Fn: reads OutboxSecret (its main declares it) but its role may not"), "{found:#?}");
    assert!(has("Fn: OUTBOX_SECRET_ID must name OutboxSecret"), "{found:#?}");
    assert!(has("Fn: is told SIGNING_SECRET_ID, a secret it does not read"), "{found:#?}");
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_eq!(
        declared_parts("run_http(&[Part::Stripe, Part::Outbox, Part::Stripe], h)"),
        [Part::Stripe, Part::Outbox]
    );
}

#[test]
fn every_features_map_entry_is_a_feature_of_shared() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/shared/Cargo.toml")).unwrap();
    let features = manifest.split("[features]").nth(1).unwrap().split("\n[").next().unwrap();
    let declared: BTreeSet<&str> = features
        .lines()
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| !name.starts_with('#') && *name != "default")
        .collect();
    let mapped: BTreeSet<&str> = ACTIONS_BY_FEATURE.iter().map(|(name, _)| *name).collect();
    assert_eq!(mapped, declared, "ACTIONS_BY_FEATURE names exactly shared's features");
}

#[test]
fn the_reader_turns_short_tags_into_the_long_form() {
    let parsed = cfn::parse(
        "A: !Ref X\nB: !GetAtt T.StreamArn\nC: !Sub \"${T.Arn}/index/${Name}\"\nD: !If [C, !Ref Y, !Ref AWS::NoValue]\nE: [!Join [',', !Ref L]]\n",
    );
    assert_eq!(parsed["A"], serde_json::json!({"Ref": "X"}));
    assert_eq!(parsed["B"], serde_json::json!({"Fn::GetAtt": ["T", "StreamArn"]}));
    assert_eq!(cfn::references(&parsed["C"]), BTreeSet::from(["T".to_owned(), "Name".to_owned()]));
    assert_eq!(cfn::branches(&parsed["D"]), vec![&serde_json::json!({"Ref": "Y"})]);
    assert_eq!(parsed["E"][0], serde_json::json!({"Fn::Join": [",", {"Ref": "L"}]}));
}

/// The check itself fails on what it is there to catch.
#[test]
fn a_forbidden_action_or_an_unexplained_wildcard_is_caught() {
    let template = cfn::parse(
        r#"
Parameters:
  SesIdentity: { Type: String }
Resources:
  Table: { Type: AWS::DynamoDB::Table }
  Topic: { Type: AWS::SNS::Topic }
  Queue: { Type: AWS::SQS::Queue }
  Lean:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - Statement:
            - Effect: Allow
              Action: [dynamodb:GetItem, dynamodb:Query]
              Resource: [!GetAtt Table.Arn, !Sub "${Table.Arn}/index/GSI1"]
            - Effect: Allow
              Action: [ses:SendEmail]
              Resource: !Sub arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${SesIdentity}
            - Effect: Allow
              Action: [sns:Publish]
              NotResource: !Sub arn:${AWS::Partition}:sns:*:*:*
            - Effect: Allow
              Action: [dynamodb:Scan]
              Resource: "*"
            - Effect: Allow
              Action: [dynamodb:GetItem]
              Resource: !Ref Topic
            - Effect: Allow
              Action: [sqs:SendMessage]
              Resource: !GetAtt Queue.Arn
        - AWSLambdaBasicExecutionRole
  Mailer:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - Statement:
            - Effect: Allow
              Action: [ses:SendEmail]
              Resource: !Sub arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${SesIdentity}
            - Sid: WildcardSmsHasNoArn
              Effect: Allow
              Action: [sns:Publish]
              NotResource: !Sub arn:${AWS::Partition}:sns:*:*:*
"#,
    );
    let facts = |function: &str, _: &Value| Facts {
        features: if function == "Mailer" { vec!["mail".into(), "sns".into()] } else { vec![] },
        secret_parts: vec![Part::PublicKeys],
    };
    let found = violations(&template, &facts);
    let has = |needle: &str| found.iter().any(|line| line.contains(needle));
    assert!(has("Lean: ses:SendEmail is not something its features"), "{found:#?}");
    assert!(has("Lean: sns:Publish is not something"), "{found:#?}");
    assert!(has("Lean: NotResource without a Wildcard"), "{found:#?}");
    assert!(has("Lean: dynamodb:Scan is not something"), "{found:#?}");
    assert!(has("Lean: \"*\" is a wildcard without"), "{found:#?}");
    assert!(has("Lean: dynamodb:GetItem on {\"Ref\":\"Topic\"}"), "{found:#?}");
    assert!(has("Lean: sqs:SendMessage is not something"), "{found:#?}");
    assert!(
        has("Lean: sqs:SendMessage to {\"Fn::GetAtt\":[\"Queue\",\"Arn\"]}, which is not one of its destinations"),
        "{found:#?}"
    );
    assert!(has("Lean: \"AWSLambdaBasicExecutionRole\": only inline statements"), "{found:#?}");
    assert!(!found.iter().any(|line| line.starts_with("Mailer")), "{found:#?}");
    assert_eq!(found.len(), 9, "{found:#?}");
}

#[test]
fn manifests_are_read_for_their_features_of_shared() {
    assert_eq!(shared_features("[dependencies]\nshared.workspace = true\n"), Vec::<String>::new());
    assert_eq!(
        shared_features("[dependencies]\nshared = { workspace = true, features = [\"mail\", \"sns\"] }\n"),
        vec!["mail", "sns"]
    );
}
