// validate.mjs — proto/openapi.yaml through @apidevtools/swagger-parser (schema
// validation against the OpenAPI 3.0 meta-schema, $ref resolution). One line per check
// and "openapi-validator: N passed, M failed".
import SwaggerParser from "@apidevtools/swagger-parser";

const file = new URL("../../proto/openapi.yaml", import.meta.url).pathname;
let passed = 0, failed = 0;
const check = (name, ok, why) => {
  if (ok) { passed++; console.log(`PASS ${name}`); } else { failed++; console.log(`FAIL ${name}: ${why}`); }
};
try {
  const api = await SwaggerParser.validate(file);
  check("valid OpenAPI document", true);
  check("OpenAPI 3.0.x", /^3\.0\.\d+$/.test(api.openapi), api.openapi);
  const op = api.paths?.["/v1/orgs/{org_id}/access-token"]?.get;
  check("getAccessToken operation", op?.operationId === "getAccessToken", JSON.stringify(op?.operationId));
} catch (e) {
  check("valid OpenAPI document", false, e.message);
}
console.log(`openapi-validator: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
