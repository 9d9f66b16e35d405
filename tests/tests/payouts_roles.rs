//! Every payout and red-packet endpoint × every role: finance requests, approvers decide,
//! viewers (and finance, approvers) read, a mini-program backend (client) may only read a
//! red packet (it needs the `wx.sendBizRedPacket` parameters); no key is 401. `admin` passes
//! every role check but never the maker-checker rule.

use minipay_e2e::{DEMO_APPID, Options, TestApp};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    Client,
    Finance,
    Approver,
    Viewer,
    Admin,
}

const EVERYONE: [Who; 6] = [Who::Nobody, Who::Client, Who::Finance, Who::Approver, Who::Viewer, Who::Admin];

fn key(app: &TestApp, who: Who) -> Option<&str> {
    Some(match who {
        Who::Nobody => return None,
        Who::Client => &app.keys.client,
        Who::Finance => &app.keys.finance,
        Who::Approver => &app.keys.approver,
        Who::Viewer => &app.keys.viewer,
        Who::Admin => &app.keys.admin,
    })
}

enum Req {
    Get(String),
    Post(String, Value),
    Csv(String, String),
}

async fn send(app: &TestApp, who: Who, req: &Req, n: usize) -> (u16, String) {
    let idem = format!("roles-{n}-{who:?}");
    let r = match req {
        Req::Get(path) => app.get_as(key(app, who), path).await,
        Req::Post(path, body) => app.post_as(key(app, who), path, body, Some(&idem)).await,
        Req::Csv(path, csv) => {
            app.post_body_as(key(app, who), path, csv.clone().into_bytes(), "text/csv", Some(&idem)).await
        }
    };
    (r.status, r.code().to_owned())
}

#[tokio::test]
async fn every_role_on_every_endpoint() {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| {
            c.payouts.approval_threshold = 10_000;
            c.payouts.redpack_approval_threshold = 10_000;
            c.payouts.openid_daily_count = 100;
        }),
        ..Options::default()
    })
    .await;
    let o = app.sandbox.openid("demo-user", DEMO_APPID);
    // Subjects: pending requests (created by finance) for the decision endpoints.
    let mut pending = Vec::new();
    for _ in 0..12 {
        pending.push(app.request_payout(&o, 20_000).await["id"].as_i64().unwrap());
    }
    let mut packets = Vec::new();
    for i in 0..12 {
        // Owned by the client key, which may then read them (issue 22).
        let body = json!({"kind": "normal", "openid": format!("oRoleUser{i:018}"), "amount": 15_000,
                          "scene_id": "PRODUCT_1", "wishing": "w", "act_name": "a", "remark": "r",
                          "owner_client_id": app.client_id});
        let r = app.create_redpack(&app.keys.finance, &body, &format!("rp-{i}")).await.expect(201).clone();
        packets.push(r["mch_billno"].as_str().unwrap().to_owned());
    }
    let mut batches = Vec::new();
    for i in 0..12 {
        let csv = format!("{o},100,batch {i}\n");
        let b = app.create_payout_batch(&app.keys.finance, &csv, &format!("b-{i}")).await.expect(201).clone();
        batches.push(b["id"].as_i64().unwrap());
    }

    use Who::*;
    let payout_body = json!({"openid": o, "amount": 100, "description": "roles"});
    let packet_body =
        json!({"kind": "normal", "openid": o, "amount": 100, "wishing": "w", "act_name": "a", "remark": "r"});
    let readers = [Finance, Approver, Viewer, Admin];
    // (endpoint, request per subject index, roles allowed)
    type Build<'a> = Box<dyn Fn(usize) -> Req + 'a>;
    let table: Vec<(&str, Build, Vec<Who>)> = vec![
        ("POST /v1/payouts", Box::new(|_| Req::Post("/v1/payouts".into(), payout_body.clone())), vec![Finance, Admin]),
        (
            "POST /v1/payouts/{id}/approve",
            Box::new(|i| Req::Post(format!("/v1/payouts/{}/approve", pending[i]), json!({}))),
            vec![Approver, Admin],
        ),
        (
            "POST /v1/payouts/{id}/reject",
            Box::new(|i| Req::Post(format!("/v1/payouts/{}/reject", pending[6 + i]), json!({}))),
            vec![Approver, Admin],
        ),
        ("GET /v1/payouts/{id}", Box::new(|_| Req::Get(format!("/v1/payouts/{}", pending[0]))), readers.to_vec()),
        ("GET /v1/payouts", Box::new(|_| Req::Get("/v1/payouts?status=pending_approval".into())), readers.to_vec()),
        (
            "POST /v1/payouts/batches",
            Box::new(|i| Req::Csv("/v1/payouts/batches".into(), format!("{o},100,csv {i}\n"))),
            vec![Finance, Admin],
        ),
        (
            "POST /v1/payouts/batches/{id}/approve",
            Box::new(|i| Req::Post(format!("/v1/payouts/batches/{}/approve", batches[i]), json!({}))),
            vec![Approver, Admin],
        ),
        (
            "POST /v1/payouts/batches/{id}/reject",
            Box::new(|i| Req::Post(format!("/v1/payouts/batches/{}/reject", batches[6 + i]), json!({}))),
            vec![Approver, Admin],
        ),
        (
            "GET /v1/payouts/batches/{id}",
            Box::new(|_| Req::Get(format!("/v1/payouts/batches/{}", batches[0]))),
            readers.to_vec(),
        ),
        (
            "POST /v1/redpacks",
            Box::new(|_| Req::Post("/v1/redpacks".into(), packet_body.clone())),
            vec![Finance, Admin],
        ),
        (
            "POST /v1/redpacks/{no}/approve",
            Box::new(|i| Req::Post(format!("/v1/redpacks/{}/approve", packets[i]), json!({}))),
            vec![Approver, Admin],
        ),
        (
            "POST /v1/redpacks/{no}/reject",
            Box::new(|i| Req::Post(format!("/v1/redpacks/{}/reject", packets[6 + i]), json!({}))),
            vec![Approver, Admin],
        ),
        (
            "GET /v1/redpacks/{no}",
            Box::new(|_| Req::Get(format!("/v1/redpacks/{}", packets[0]))),
            vec![Finance, Approver, Viewer, Admin, Client],
        ),
        ("GET /v1/redpacks", Box::new(|_| Req::Get("/v1/redpacks".into())), readers.to_vec()),
    ];
    let mut n = 0;
    for (name, build, allowed) in &table {
        for (i, who) in EVERYONE.into_iter().enumerate() {
            n += 1;
            let (status, code) = send(&app, who, &build(i), n).await;
            match who {
                Nobody => assert_eq!((status, code.as_str()), (401, "unauthorized"), "{name} without a key"),
                w if allowed.contains(&w) => {
                    assert!(status < 300, "{name} as {w:?} must be allowed: {status} {code}");
                }
                w => assert_eq!((status, code.as_str()), (403, "forbidden"), "{name} as {w:?}"),
            }
        }
    }
    let doc = app.get_as(None, "/openapi.json").await;
    for path in ["/v1/payouts", "/v1/payouts/{id}/approve", "/v1/payouts/batches", "/v1/redpacks/{mch_billno}"] {
        assert!(doc.body["paths"][path].is_object(), "{path} is documented");
    }
    app.assert_ledger_balanced().await;
}
