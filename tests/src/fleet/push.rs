//! The push wiring of a fleet: one S3 object's changes fanned out to one SQS queue per daemon,
//! through an SNS topic (bucket notification → topic → queues), as on AWS.
//!
//! [`wire_push`] creates the topic (with a policy letting S3 publish from the bucket), N queues
//! (each with a policy letting the topic send), subscribes every queue to the topic, and puts the
//! bucket's notification configuration: `s3:ObjectCreated:*` and `s3:ObjectRemoved:*` for the one
//! object key. Every call goes to the given endpoint (moto in server mode, see
//! [`super::moto`]), so the same code would wire a real account.

use super::moto::{block_on, s3_client, sns_client, sqs_client};
use anyhow::{Context as _, anyhow};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    S3KeyFilter, TopicConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;

/// Empties the queues (SQS PurgeQueue): for instance of the `s3:TestEvent` that S3 sends to the
/// topic when the notification configuration is put, so that daemons start on quiet queues.
/// (On AWS the test event may arrive later; moto delivers it before `wire_push` returns.)
pub fn purge_queues(endpoint: &str, queues: &[String]) -> anyhow::Result<()> {
    block_on(async {
        let sqs = sqs_client(endpoint);
        for url in queues {
            sqs.purge_queue()
                .queue_url(url)
                .send()
                .await
                .map_err(|e| anyhow!("SQS PurgeQueue {url}: {}", DisplayErrorContext(e)))?;
        }
        Ok(())
    })?
}

/// Wires `s3://bucket/key` on `endpoint` to `queues` new SQS queues through a new SNS topic and
/// returns the queue URLs (as the server gives them), one per daemon. `bucket` must exist.
/// With `raw_delivery`, SNS delivers the S3 event itself as the message body
/// (`RawMessageDelivery=true`); otherwise the body is SNS's JSON envelope, whose `Message` field
/// holds the S3 event as a string. Calling it again for the same bucket reuses the topic and the
/// queues of the same names.
pub fn wire_push(
    endpoint: &str,
    bucket: &str,
    key: &str,
    queues: usize,
    raw_delivery: bool,
) -> anyhow::Result<Vec<String>> {
    block_on(wire(endpoint, bucket, key, queues, raw_delivery))?
}

async fn wire(
    endpoint: &str,
    bucket: &str,
    key: &str,
    queues: usize,
    raw_delivery: bool,
) -> anyhow::Result<Vec<String>> {
    let (sns, sqs) = (sns_client(endpoint), sqs_client(endpoint));
    let stem = name_stem(bucket);
    let topic = create_topic(&sns, &stem, bucket).await?;
    let mut urls = Vec::with_capacity(queues);
    for index in 0..queues {
        let (url, arn) = create_queue(&sqs, &format!("{stem}-{index}"), &topic).await?;
        subscribe(&sns, &topic, &arn, raw_delivery).await?;
        urls.push(url);
    }
    notify_topic(&s3_client(endpoint), bucket, key, &topic).await?;
    Ok(urls)
}

/// `heare-auth-<bucket>`, dots made dashes and cut so that queue names stay within 80 characters.
fn name_stem(bucket: &str) -> String {
    let cleaned: String = bucket
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    format!("heare-auth-{cleaned}")
}

/// Creates the topic (idempotent) and lets the bucket's notifications publish to it.
async fn create_topic(
    sns: &aws_sdk_sns::Client,
    name: &str,
    bucket: &str,
) -> anyhow::Result<String> {
    let created = sns
        .create_topic()
        .name(name)
        .send()
        .await
        .map_err(|e| anyhow!("SNS CreateTopic {name}: {}", DisplayErrorContext(e)))?;
    let arn = created
        .topic_arn
        .ok_or_else(|| anyhow!("SNS CreateTopic {name}: no TopicArn in the answer"))?;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "s3.amazonaws.com" },
            "Action": "SNS:Publish",
            "Resource": arn,
            "Condition": { "ArnLike": { "aws:SourceArn": format!("arn:aws:s3:::{bucket}") } },
        }],
    });
    sns.set_topic_attributes()
        .topic_arn(&arn)
        .attribute_name("Policy")
        .attribute_value(policy.to_string())
        .send()
        .await
        .map_err(|e| anyhow!("SNS SetTopicAttributes {arn}: {}", DisplayErrorContext(e)))?;
    Ok(arn)
}

/// Creates a queue (idempotent) that the topic may send to; returns its URL and ARN.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    topic: &str,
) -> anyhow::Result<(String, String)> {
    let created = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| anyhow!("SQS CreateQueue {name}: {}", DisplayErrorContext(e)))?;
    let url = created
        .queue_url
        .ok_or_else(|| anyhow!("SQS CreateQueue {name}: no QueueUrl in the answer"))?;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| anyhow!("SQS GetQueueAttributes {url}: {}", DisplayErrorContext(e)))?;
    let arn = attributes
        .attributes
        .and_then(|mut map| map.remove(&QueueAttributeName::QueueArn))
        .with_context(|| format!("SQS GetQueueAttributes {url}: no QueueArn"))?;
    allow_topic(sqs, &url, &arn, topic).await?;
    Ok((url, arn))
}

/// Sets the queue policy that lets `topic` (and nothing else) send to the queue.
async fn allow_topic(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    arn: &str,
    topic: &str,
) -> anyhow::Result<()> {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "sns.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": topic } },
        }],
    });
    sqs.set_queue_attributes()
        .queue_url(url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| anyhow!("SQS SetQueueAttributes {url}: {}", DisplayErrorContext(e)))?;
    Ok(())
}

async fn subscribe(
    sns: &aws_sdk_sns::Client,
    topic: &str,
    queue_arn: &str,
    raw_delivery: bool,
) -> anyhow::Result<()> {
    let mut request = sns
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(queue_arn);
    if raw_delivery {
        request = request.attributes("RawMessageDelivery", "true");
    }
    request
        .send()
        .await
        .map_err(|e| anyhow!("SNS Subscribe {queue_arn}: {}", DisplayErrorContext(e)))?;
    Ok(())
}

/// Puts the bucket's notification configuration: creations and removals of `key` to `topic`.
async fn notify_topic(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    topic: &str,
) -> anyhow::Result<()> {
    // One rule, the key object's name as a prefix: it covers the object and its change log
    // (`<key>.changes/…`). Two rules (the object; the log's prefix) would overlap, which S3
    // refuses for one event type.
    let rule = |name, value: &str| FilterRule::builder().name(name).value(value).build();
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(rule(FilterRuleName::Prefix, key))
                .build(),
        )
        .build();
    let topic_configuration = TopicConfiguration::builder()
        .id("heare-auth-key-file")
        .topic_arn(topic)
        .events(Event::S3ObjectCreated)
        .events(Event::S3ObjectRemoved)
        .filter(filter)
        .build()
        .context("building the topic configuration")?;
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .topic_configurations(topic_configuration)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "S3 PutBucketNotificationConfiguration {bucket}: {}",
                DisplayErrorContext(e)
            )
        })?;
    Ok(())
}
