//! .github/workflows/release.yml cannot run here (it needs GitHub's runners, OIDC and a
//! registry): scripts/check-release.sh checks it against the workflow schema and shellcheck,
//! and these tests check that it does everything docs/verify-release.md tells users to verify,
//! with what this repository really has (the Dockerfile's target, the SBOM's path, the
//! binary's features).

use std::path::PathBuf;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn workflow() -> Value {
    let text = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    serde_json::to_value(v).unwrap()
}

/// Every `run:` of a job, joined.
fn runs(job: &Value) -> String {
    job["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| s["run"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn uses(job: &Value) -> Vec<&str> {
    let mut all: Vec<&str> = job["steps"]
        .as_array()
        .map(|steps| steps.iter().filter_map(|s| s["uses"].as_str()).collect())
        .unwrap_or_default();
    all.extend(job["uses"].as_str());
    all
}

fn job_using<'a>(w: &'a Value, action: &str) -> Vec<(&'a String, &'a Value)> {
    w["jobs"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, j)| uses(j).iter().any(|u| u.starts_with(action)))
        .collect()
}

#[test]
fn a_release_runs_on_version_tags_with_read_only_defaults() {
    let w = workflow();
    // serde_yaml_ng reads the key `on` as a string (YAML 1.2).
    assert_eq!(w["on"]["push"]["tags"], serde_json::json!(["v*"]));
    assert_eq!(w["permissions"], serde_json::json!({"contents": "read"}));
    for (name, job) in w["jobs"].as_object().unwrap() {
        let perms = job["permissions"]
            .as_object()
            .unwrap_or_else(|| panic!("job {name} must say what it may write, not inherit"));
        // Only a job that signs (cosign, the SLSA generators) gets an OIDC token, and never
        // one that checks out or builds the repository's code: anything running there could
        // sign as the release workflow.
        if perms.get("id-token").is_some() {
            let signs = runs(job).contains("cosign ")
                || uses(job)
                    .iter()
                    .any(|u| u.contains("slsa-github-generator"));
            assert!(
                signs,
                "job {name} asks for id-token: write and signs nothing"
            );
            assert!(
                !uses(job).iter().any(|u| u.starts_with("actions/checkout@"))
                    && !runs(job).contains("cargo "),
                "job {name} runs the repository's code with an OIDC token"
            );
        }
    }
}

#[test]
fn every_action_is_a_release_never_a_branch() {
    let w = workflow();
    for (name, job) in w["jobs"].as_object().unwrap() {
        for u in uses(job) {
            let (_, reference) = u.rsplit_once('@').unwrap_or_else(|| panic!("{u}: no ref"));
            assert!(
                reference.starts_with('v')
                    && reference[1..].starts_with(|c: char| c.is_ascii_digit()),
                "job {name}: {u} is not a release tag"
            );
        }
    }
    // slsa-verifier recognises the builders by their full tag, `vX.Y.Z`.
    for (_, job) in job_using(&w, "slsa-framework/slsa-github-generator") {
        let u = job["uses"].as_str().unwrap();
        let version = u.rsplit_once("@v").unwrap().1;
        let numbers = version
            .split('.')
            .filter(|n| n.parse::<u32>().is_ok())
            .count();
        assert_eq!(numbers, 3, "{u}");
    }
    // cosign-installer picks the cosign it installs: the workflow says which.
    let signers = job_using(&w, "sigstore/cosign-installer@");
    assert_eq!(signers.len(), 2);
    for (name, job) in signers {
        let step = job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["uses"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("sigstore/cosign-installer@"))
            })
            .unwrap();
        let release = step["with"]["cosign-release"].as_str();
        assert!(release.is_some_and(|v| v.starts_with("v2.")), "job {name}");
    }
}

#[test]
fn the_binary_is_the_production_build_with_its_sbom_and_signed_checksums() {
    let w = workflow();
    let build = &w["jobs"]["build"];
    let script = runs(build);
    assert!(
        script.contains("cargo build --release --locked --no-default-features"),
        "{script}"
    );
    assert!(build["permissions"].get("id-token").is_none());
    // The supply-chain script (cargo deny, the SBOM) runs, and the SBOM it writes is shipped.
    assert!(script.contains("bash scripts/supply-chain.sh"));
    let supply = std::fs::read_to_string(root().join("scripts/supply-chain.sh")).unwrap();
    assert!(supply.contains("target/sbom/selfheal.cdx.json"));
    assert!(supply.contains("--no-default-features"));
    assert!(script.contains("cp target/sbom/selfheal.cdx.json"));
    assert!(script.contains("sha256sum"));
    let sign = runs(&w["jobs"]["sign"]);
    assert!(sign.contains(
        "cosign sign-blob --yes --new-bundle-format --bundle dist/SHA256SUMS.sigstore.json dist/SHA256SUMS"
    ));
    // The provenance covers what SHA256SUMS lists: the tarball and the SBOM.
    assert_eq!(
        build["outputs"]["hashes"],
        "${{ steps.hashes.outputs.hashes }}"
    );
    assert!(script.contains("base64 -w0 dist/SHA256SUMS"));
    let provenance = job_using(
        &w,
        "slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml",
    );
    assert_eq!(provenance.len(), 1);
    let (_, p) = provenance[0];
    assert_eq!(
        p["with"]["base64-subjects"],
        "${{ needs.build.outputs.hashes }}"
    );
    assert_eq!(p["with"]["upload-assets"], true);
    assert_eq!(p["with"]["provenance-name"], "selfheal.intoto.jsonl");
    // It uploads to the release, still a draft, published once every attestation is attached.
    assert!(p["needs"]
        .as_array()
        .unwrap()
        .contains(&Value::from("release")));
    assert_eq!(p["with"]["draft-release"], true);
    assert!(runs(&w["jobs"]["release"]).contains(
        "gh release create \"$TAG\" dist/* --repo \"$GITHUB_REPOSITORY\" --verify-tag --draft"
    ));
    let publish = &w["jobs"]["publish"];
    assert!(runs(publish).contains("--draft=false"));
    for needed in ["provenance", "image-sign", "image-provenance"] {
        let needs = publish["needs"].as_array().unwrap();
        assert!(
            needs.contains(&Value::from(needed)),
            "published before {needed}"
        );
    }
}

#[test]
fn the_image_is_signed_by_digest_with_its_sbom_and_provenance() {
    let w = workflow();
    let image = &w["jobs"]["image"];
    let push = image["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("an image build");
    // The Dockerfile has that target, and .dockerignore lets the binary into the context.
    let target = push["with"]["target"].as_str().unwrap();
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!(" AS {target}\n")),
        "no stage {target}"
    );
    let args = push["with"]["build-args"].as_str().unwrap();
    assert!(args.contains("BINARY=target/release/selfheal"));
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "!target/release/selfheal"));
    assert_eq!(push["with"]["provenance"], false);
    assert_eq!(
        image["outputs"]["digest"],
        "${{ steps.push.outputs.digest }}"
    );
    let signing = &w["jobs"]["image-sign"];
    let script = runs(signing);
    assert!(
        script.contains("cosign sign --yes \"$IMAGE@$DIGEST\""),
        "signed by digest, never by tag"
    );
    assert!(script.contains("cosign attest --yes --type cyclonedx"));
    let provenance = job_using(
        &w,
        "slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml",
    );
    assert_eq!(provenance.len(), 1);
    let (_, p) = provenance[0];
    assert_eq!(p["with"]["digest"], "${{ needs.image.outputs.digest }}");
    assert_eq!(p["with"]["image"], "${{ needs.image.outputs.image }}");
}

#[test]
fn the_verification_guide_checks_what_the_release_makes() {
    let guide = std::fs::read_to_string(root().join("docs/verify-release.md")).unwrap();
    for step in [
        "slsa-verifier verify-artifact",
        "slsa-verifier verify-image",
        "cosign verify ",
        "cosign verify-attestation --type cyclonedx",
        "cosign verify-blob",
        "sha256sum --ignore-missing -c",
        "selfheal.intoto.jsonl",
        "SHA256SUMS.sigstore.json",
        "--certificate-oidc-issuer https://token.actions.githubusercontent.com",
    ] {
        assert!(
            guide.contains(step),
            "docs/verify-release.md does not say `{step}`"
        );
    }
}
