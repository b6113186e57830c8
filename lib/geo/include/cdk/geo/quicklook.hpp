#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/geo/scene.hpp"

namespace cdk::geo {

/// A quick-look picture of a change map: what people look at before they open a GIS.
struct QuicklookOptions {
    std::string out;         ///< the picture (PNG; its georeferencing in OUT.aux.xml)
    int max_size = 1024;     ///< its longest side in pixels (a smaller scene keeps its size)
    std::vector<int> bands;  ///< bands of the image shown as red, green, blue (1-based); empty = chosen
    bool overwrite = false;  ///< replace an existing picture
};

/// Refuse, before any work, a quick-look path that is not a .png or is the map itself.
void check_quicklook_path(const std::string& quicklook, const std::string& map);

/// The bands a quick look shows as red, green and blue: `asked` when given (1 or 3 bands),
/// else those named red/green/blue (descriptions "Red"... or Sentinel-2's B04, B03, B02
/// in a stack of 10 or more bands), else the first three (one band: grey).
std::vector<int> quicklook_bands(const Scene& image, const std::vector<int>& asked = {});

/// Draw `image` (date 2, on the mask's grid) decimated to at most max_size pixels a side,
/// each band stretched between its 2nd and 98th percentiles over valid pixels, with the
/// change mask (`mask_path`: 0 no change, 1 change, 255 nodata) over it: a picture pixel
/// with any changed pixel under it is blended with red (so that small changes stay
/// visible), one where the mask has no data is a grey checker. Written atomically; returns
/// {"path", "width", "height", "bands"}.
nlohmann::json write_quicklook(const Scene& image, const std::string& mask_path, const QuicklookOptions& options,
                               const RunContext& ctx = {});

}  // namespace cdk::geo
