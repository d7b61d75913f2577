"""The only wing that speaks Kafka, gRPC, Prefect or the generated protobuf: the task bus,
job orchestration steps, message conversions, gRPC plumbing, clients and the model runner.
Stage subpackages never import it."""
