"""Development tools, apart from the product: a local Kafka from Maven jars
(``localkafka``), the reference MigratoryData server (``sim``) and the demo (``demo``)."""
