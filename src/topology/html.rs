//! The `html` format: one self-contained page (its script and styles inline, nothing
//! fetched from anywhere) that lays the graph out itself, pans, zooms, shows a node's
//! edges with their figures on click, and filters by host and protocol. The graph's JSON
//! document is embedded in it; served by `--serve`, the page follows `GET /graph`.

use super::render::{Report, json};

const PAGE: &str = include_str!("page.html");
const SLOT: &str = "__GRAPH_JSON__";

/// The page with this report in it.
pub fn page(r: &Report) -> String {
    // `<` only occurs inside JSON strings, where `\u003c` means the same; so no `</script>`
    // in a process name can end the script element.
    PAGE.replacen(SLOT, &json(r).replace('<', "\\u003c"), 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_fetches_nothing_and_has_one_slot() {
        let p = super::PAGE;
        assert_eq!(p.matches(super::SLOT).count(), 1);
        for banned in ["src=", "href=\"http", "@import", "url(http", "//cdn"] {
            assert!(
                !p.contains(banned),
                "the page must not load anything: {banned}"
            );
        }
    }
}
