"""The lab: network namespaces, FRR, the test Kubernetes API server and the speaker process,
as a library shared by the integration tests, the demo, the benchmarks and docker-compose."""
