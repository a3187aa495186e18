# The GPU benchmark; bench/CMakeLists.txt includes this file.
if(RINGSERVE_CUDA)
  add_executable(ringserve-gpu-bench ${CMAKE_CURRENT_LIST_DIR}/gpu_bench.cc)
  ringserve_target(ringserve-gpu-bench)
  target_link_libraries(ringserve-gpu-bench PRIVATE ringserve_model ringserve_kernels_cuda)
endif()
