#include "cdk/pipeline/curves.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

#include "cdk/core/fs.hpp"

namespace cdk::pipeline {

namespace {

struct Series {
    std::string name, colour;
    bool dashed = false;
    std::vector<std::pair<double, double>> points;  // epoch, value
};

std::string esc(const std::string& t) {
    std::string o;
    for (char c : t) {
        if (c == '&') o += "&amp;";
        else if (c == '<') o += "&lt;";
        else if (c == '>') o += "&gt;";
        else if (c == '"') o += "&quot;";
        else o += c;
    }
    return o;
}

std::string num(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", v);
    return b;
}

// Tick label: as few digits as the step needs.
std::string tick_label(double v, double step) {
    char b[32];
    const int digits = step >= 1 ? 0 : std::min(6, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
    std::snprintf(b, sizeof b, "%.*f", digits, v);
    return b;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `n` ticks over `span`.
double nice_step(double span, int n) {
    if (!(span > 0)) return 1;
    const double raw = span / n, p = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (raw <= m * p) return m * p;
    return 10 * p;
}

// One panel: axes, ticks, the series, a legend; `best` marks an epoch (0: none).
std::string panel(double x0, double y0, double w, double h, const std::string& title, const std::vector<Series>& series,
                  double max_epoch, int best, bool unit_range) {
    std::string s;
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const auto& se : series)
        for (const auto& [e, v] : se.points)
            if (std::isfinite(v)) {
                lo = std::min(lo, v);
                hi = std::max(hi, v);
            }
    if (!std::isfinite(lo)) {
        lo = 0;
        hi = 1;
    }
    if (unit_range) {
        lo = 0;
        hi = std::max(hi, 0.1);
    }
    if (hi - lo < 1e-9) hi = lo + (lo == 0 ? 1 : std::abs(lo) * 0.1);
    const double ystep = nice_step(hi - lo, 5);
    lo = std::floor(lo / ystep) * ystep;
    hi = std::ceil(hi / ystep) * ystep;
    const double xmax = std::max(1.0, max_epoch);
    auto X = [&](double e) { return x0 + (xmax <= 1 ? w / 2 : (e - 1) / (xmax - 1) * w); };
    auto Y = [&](double v) { return y0 + h - (v - lo) / (hi - lo) * h; };
    s += "<text x=\"" + num(x0 + w / 2) + "\" y=\"" + num(y0 - 12) +
         "\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">" + esc(title) + "</text>\n";
    s += "<rect x=\"" + num(x0) + "\" y=\"" + num(y0) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
         "\" fill=\"white\" stroke=\"#444\"/>\n";
    for (double v = lo; v <= hi + ystep / 2; v += ystep) {
        s += "<line x1=\"" + num(x0) + "\" x2=\"" + num(x0 + w) + "\" y1=\"" + num(Y(v)) + "\" y2=\"" + num(Y(v)) +
             "\" stroke=\"#ddd\"/>\n";
        s += "<text x=\"" + num(x0 - 6) + "\" y=\"" + num(Y(v) + 4) + "\" text-anchor=\"end\" font-size=\"11\">" +
             tick_label(v, ystep) + "</text>\n";
    }
    const double xstep = std::max(1.0, nice_step(xmax - 1, 8));
    for (double e = 1; e <= xmax + 1e-9; e += xstep)
        s += "<text x=\"" + num(X(e)) + "\" y=\"" + num(y0 + h + 16) + "\" text-anchor=\"middle\" font-size=\"11\">" +
             tick_label(e, 1) + "</text>\n";
    s += "<text x=\"" + num(x0 + w / 2) + "\" y=\"" + num(y0 + h + 34) +
         "\" text-anchor=\"middle\" font-size=\"12\">epoch</text>\n";
    if (best > 0)
        s += "<line x1=\"" + num(X(best)) + "\" x2=\"" + num(X(best)) + "\" y1=\"" + num(y0) + "\" y2=\"" +
             num(y0 + h) + "\" stroke=\"#2a9d3a\" stroke-dasharray=\"2,3\"/>\n";
    // The legend in a row under the panel, where no curve runs.
    double lx = x0, ly = y0 + h + 58;
    for (const auto& se : series) {
        if (se.points.empty()) continue;
        std::string pts;
        for (const auto& [e, v] : se.points)
            if (std::isfinite(v)) pts += num(X(e)) + "," + num(Y(v)) + " ";
        s += "<polyline fill=\"none\" stroke=\"" + se.colour + "\" stroke-width=\"2\"" +
             (se.dashed ? " stroke-dasharray=\"6,4\"" : "") + " points=\"" + pts + "\"/>\n";
        for (const auto& [e, v] : se.points)
            if (std::isfinite(v))
                s += "<circle cx=\"" + num(X(e)) + "\" cy=\"" + num(Y(v)) + "\" r=\"2.5\" fill=\"" + se.colour + "\"/>\n";
        s += "<line x1=\"" + num(lx) + "\" x2=\"" + num(lx + 24) + "\" y1=\"" + num(ly - 4) + "\" y2=\"" +
             num(ly - 4) + "\" stroke=\"" + se.colour + "\" stroke-width=\"2\"" +
             (se.dashed ? " stroke-dasharray=\"6,4\"" : "") + "/>\n";
        s += "<text x=\"" + num(lx + 30) + "\" y=\"" + num(ly) + "\" font-size=\"11\">" + esc(se.name) + "</text>\n";
        lx += 40 + 6.5 * static_cast<double>(se.name.size());
    }
    if (best > 0)
        s += "<text x=\"" + num(lx) + "\" y=\"" + num(ly) + "\" font-size=\"11\" fill=\"#2a9d3a\">dotted: best epoch " +
             std::to_string(best) + "</text>\n";
    return s;
}

double number_at(const nlohmann::json& j, std::initializer_list<const char*> path) {
    const nlohmann::json* p = &j;
    for (const char* k : path) {
        if (!p->is_object() || !p->contains(k)) return std::numeric_limits<double>::quiet_NaN();
        p = &(*p)[k];
    }
    return p->is_number() ? p->get<double>() : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

std::string training_curves_svg(const std::vector<nlohmann::json>& lines, const std::string& title) {
    Series train{"training loss", "#1f5fbf", false, {}}, vloss{"validation loss", "#e07b00", true, {}};
    Series f1{"F1 (change)", "#c0392b", false, {}}, f1best{"F1 at best threshold", "#8e44ad", true, {}};
    double max_epoch = 1;
    int best = 0;
    for (const auto& l : lines) {
        if (!l.is_object() || !l.contains("epoch")) continue;
        const double e = l["epoch"].get<double>();
        max_epoch = std::max(max_epoch, e);
        const double tl = number_at(l, {"train_loss"});
        if (std::isfinite(tl)) train.points.push_back({e, tl});
        const double vl = number_at(l, {"val", "loss"});
        if (std::isfinite(vl)) vloss.points.push_back({e, vl});
        double f = number_at(l, {"val", "change", "f1"});
        double fb = number_at(l, {"val", "best_threshold", "f1"});
        if (!std::isfinite(f) && std::isfinite(number_at(l, {"val", "image", "accuracy"}))) {
            // Image-level validation (KD-MSI): the accuracy that picks the best epoch, and the F1.
            f1.name = "image accuracy";
            f1best.name = "image F1";
            f = number_at(l, {"val", "image", "accuracy"});
            fb = number_at(l, {"val", "image", "f1"});
        }
        if (std::isfinite(f)) f1.points.push_back({e, f});
        if (std::isfinite(fb)) f1best.points.push_back({e, fb});
        if (l.value("best", false)) best = static_cast<int>(e);  // the last improvement is the bundle's epoch
    }
    const double W = 960, H = 430;
    std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                    num(W) + "\" height=\"" + num(H) + "\" viewBox=\"0 0 " + num(W) + " " + num(H) +
                    "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n<rect width=\"" + num(W) + "\" height=\"" +
                    num(H) + "\" fill=\"#fafafa\"/>\n";
    s += "<text x=\"" + num(W / 2) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">" + esc(title) + "</text>\n";
    if (train.points.empty()) {
        s += "<text x=\"" + num(W / 2) + "\" y=\"" + num(H / 2) +
             "\" text-anchor=\"middle\" font-size=\"14\">no finished epoch yet</text>\n</svg>\n";
        return s;
    }
    s += panel(70, 70, 380, 270, "loss", {train, vloss}, max_epoch, best, false);
    if (!f1.points.empty()) s += panel(550, 70, 380, 270, "validation", {f1, f1best}, max_epoch, best, true);
    else
        s += "<text x=\"740\" y=\"200\" text-anchor=\"middle\" font-size=\"13\">no validation tiles (--val)</text>\n";
    return s + "</svg>\n";
}

void write_training_curves(const std::string& log_path, const std::string& svg_path, const std::string& title) {
    std::vector<nlohmann::json> lines;
    std::ifstream in(log_path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        try {
            lines.push_back(nlohmann::json::parse(line));
        } catch (const nlohmann::json::exception&) {
        }
    }
    write_text_file(svg_path, training_curves_svg(lines, title), true);
}

}  // namespace cdk::pipeline
