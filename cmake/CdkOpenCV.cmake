# Debian's libopencv-core-dev / libopencv-imgproc-dev ship neither a CMake config nor a
# pkg-config file (only libopencv-dev does, with a large dependency tree), so find the two
# libraries we use directly.
find_path(OpenCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
find_library(OpenCV_CORE_LIB opencv_core REQUIRED)
find_library(OpenCV_IMGPROC_LIB opencv_imgproc REQUIRED)
add_library(cdk_opencv INTERFACE)
target_include_directories(cdk_opencv SYSTEM INTERFACE ${OpenCV_INCLUDE_DIR})
target_link_libraries(cdk_opencv INTERFACE ${OpenCV_IMGPROC_LIB} ${OpenCV_CORE_LIB})
