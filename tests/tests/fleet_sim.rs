use heare_auth_tests::fleet::moto::{Moto, block_on, s3_client, sqs_client};
use heare_auth_tests::fleet::push::wire_push;

#[test]
fn scratch_push() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    block_on(async {
        s3_client(&endpoint)
            .create_bucket()
            .bucket("fleet")
            .send()
            .await
            .unwrap();
    })
    .unwrap();
    for raw in [false, true] {
        let bucket = if raw { "fleet-raw" } else { "fleet" };
        if raw {
            block_on(async {
                s3_client(&endpoint)
                    .create_bucket()
                    .bucket(bucket)
                    .send()
                    .await
                    .unwrap();
            })
            .unwrap();
        }
        let urls = wire_push(&endpoint, bucket, "keys.json", 3, raw).unwrap();
        println!("{urls:?}");
        block_on(async {
            let s3 = s3_client(&endpoint);
            s3.put_object()
                .bucket(bucket)
                .key("other.json")
                .body(b"x".to_vec().into())
                .send()
                .await
                .unwrap();
            s3.put_object()
                .bucket(bucket)
                .key("keys.json")
                .body(b"{}".to_vec().into())
                .send()
                .await
                .unwrap();
            let sqs = sqs_client(&endpoint);
            for url in &urls {
                let out = sqs
                    .receive_message()
                    .queue_url(url)
                    .wait_time_seconds(1)
                    .max_number_of_messages(10)
                    .send()
                    .await
                    .unwrap();
                for m in out.messages() {
                    println!("{url}: {}", m.body().unwrap_or_default());
                }
            }
        })
        .unwrap();
    }
}
