# Warnings, ccache, and a helper to apply them to cdkit's own targets.
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  # Precompiled headers only hit the cache with these sloppiness settings.
  set(ENV{CCACHE_SLOPPINESS} "pch_defines,time_macros,include_file_mtime,include_file_ctime")
endif()

function(cdk_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wno-unused-parameter)
endfunction()

# Reuse lib/nn's precompiled <torch/torch.h> (one ~0.6 GiB file for the whole build, not one
# per target). GCC ignores a precompiled header whose flags do not fit; -Winvalid-pch says so.
function(cdk_reuse_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM cdk_nn)
  target_compile_options(${target} PRIVATE -Winvalid-pch)
endfunction()
