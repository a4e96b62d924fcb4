//! The mapping study's counts through the admin service: a known population of cases gives
//! exactly its counts where they are published, no count of 1 to 4 is published, and none
//! can be worked out from the published totals.

use henvis_domain::{
    Sector,
    stats::{Cell, Table, recoverable},
};
use henvis_proto::henvis::admin::v1::StatsRequest;
use henvis_tests::{Deployment, admin};
use tonic::Code;

use crate::{report, routed, submit};

async fn table(d: &Deployment, by: &[&str], threshold: u64) -> Result<Table, tonic::Status> {
    let t = d
        .admin_client(&admin("admin-3"))
        .await
        .unwrap()
        .stats(StatsRequest {
            by: by.iter().map(|b| (*b).to_owned()).collect(),
            threshold,
        })
        .await?
        .into_inner();
    Ok(henvis_convert::stats_from_wire(&t))
}

fn no_small_count_published(t: &Table) {
    let all = t
        .cells
        .iter()
        .flatten()
        .chain(&t.row_totals)
        .chain(&t.column_totals)
        .chain([&t.total]);
    for c in all {
        assert!(
            !matches!(c, Cell::Count(v) if *v > 0 && *v < t.threshold),
            "a small count published: {t:?}"
        );
    }
    assert_eq!(recoverable(t), 0, "a suppressed count can be worked out: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_study_counts_a_known_population_and_no_small_cell_can_be_recovered() {
    let d = Deployment::start().await.unwrap();
    // 12 reports in København by an NGO, 3 in Odense by the police, 7 in Aarhus by a region
    let population = [
        (Sector::Ngo, "ngo-hopenow", "101", 12),
        (Sector::Police, "politi-fyn", "461", 3),
        (Sector::Health, "region-midtjylland", "751", 7),
    ];
    for (sector, agency, municipality, n) in population {
        let mut c = d.client(sector, agency).await.unwrap();
        for i in 0..n {
            let r = submit(&mut c, &format!("{agency}-{i}"), "", report(municipality))
                .await
                .unwrap();
            routed(&mut c, &r.event_id).await;
        }
    }
    let by_district = table(&d, &["district"], 0).await.unwrap();
    assert_eq!(by_district.unit, "cases");
    assert_eq!(
        by_district.rows,
        ["politi-fyn", "politi-koebenhavn", "politi-oestjylland"]
    );
    let cells: Vec<Cell> = by_district.cells.iter().map(|r| r[0]).collect();
    assert_eq!(
        cells,
        [Cell::Suppressed, Cell::Count(12), Cell::Suppressed],
        "Odense's 3 suppressed, and Aarhus's 7 with it: the total would give it away"
    );
    assert_eq!(by_district.total, Cell::Count(22));
    no_small_count_published(&by_district);

    let cross = table(&d, &["district", "sender_sector"], 0).await.unwrap();
    no_small_count_published(&cross);
    assert_eq!(cross.total, Cell::Count(22));
    let by_month = table(&d, &["month"], 0).await.unwrap();
    assert_eq!(by_month.total, Cell::Count(22));
    assert_eq!(
        by_month
            .cells
            .iter()
            .flatten()
            .filter(|c| **c == Cell::Count(22))
            .count(),
        1
    );
    // a higher threshold hides København too; a lower one than the deployment's is refused
    let strict = table(&d, &["district"], 13).await.unwrap();
    no_small_count_published(&strict);
    assert!(strict.cells.iter().flatten().all(|c| *c == Cell::Suppressed));
    let e = table(&d, &["district"], 2).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("threshold"), "{}", e.message());
    let e = table(&d, &["postcode"], 0).await.unwrap_err();
    assert!(e.message().contains("by[0]"), "{}", e.message());
    let events = table(&d, &["message_type"], 0).await.unwrap();
    assert_eq!(events.unit, "events");
    println!(
        "mapping study: 22 cases; by district: {}; suppressed cells recoverable from the totals: 0 (district, district × sender sector, month)",
        henvis_domain::stats::to_csv(&by_district).replace('\n', " ")
    );
}
