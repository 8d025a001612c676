//! The reconnect-storm histogram as a PNG.

use std::path::Path;

use plotters::prelude::*;

/// Fonts looked for, in order (the PNG needs one for its labels).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

fn register_font() -> Result<(), String> {
    let bytes = FONTS.iter().find_map(|p| std::fs::read(p).ok()).ok_or("no TrueType font found")?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| "unusable font".to_string())
}

/// Draws both histograms (arrivals per 100 ms bucket) side by side.
pub fn histogram(path: &Path, jitter: &[u64], fixed: &[u64]) -> Result<(), String> {
    register_font()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let buckets = jitter.len().max(fixed.len()).max(1);
    let top = jitter.iter().chain(fixed).copied().max().unwrap_or(1).max(1);
    let root = BitMapBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Reconnections accepted per 100 ms after dropping every client", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..(buckets as f64 * 100.0), 0u64..(top + top / 10 + 1))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("ms after the drop")
        .y_desc("reconnections")
        .disable_x_mesh()
        .draw()
        .map_err(|e| e.to_string())?;
    let series = [
        (jitter, RGBColor(31, 119, 180), "resub (full jitter)", 0.0),
        (fixed, RGBColor(214, 39, 40), "no jitter", 50.0),
    ];
    for (data, color, name, offset) in series {
        chart
            .draw_series(data.iter().enumerate().map(|(i, &c)| {
                let x0 = i as f64 * 100.0 + offset + 2.0;
                Rectangle::new([(x0, 0), (x0 + 46.0, c)], color.filled())
            }))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
