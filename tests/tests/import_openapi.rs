//! `tollgate import-openapi`: an OpenAPI description becomes an API that routes its
//! operations, runs on a real gateway, and goes in through `PUT /apis/{id}`.
#![allow(missing_docs)]

use tollgate_tests::*;

fn petstore(server: &str) -> String {
    format!(
        r#"openapi: 3.0.3
info: {{ title: Swagger Petstore, version: 1.0.0 }}
servers:
  - url: "{server}/{{version}}"
    variables: {{ version: {{ default: v1 }} }}
paths:
  /pets:
    get: {{ operationId: listPets, responses: {{ "200": {{ description: ok }} }} }}
    post: {{ operationId: createPets, responses: {{ "201": {{ description: ok }} }} }}
  /pets/{{pet-id}}:
    parameters: [ {{ name: pet-id, in: path, required: true, schema: {{ type: string }} }} ]
    get: {{ operationId: showPetById, responses: {{ "200": {{ description: ok }} }} }}
    delete: {{ responses: {{ "204": {{ description: gone }} }} }}
  /files/{{name}}.json:
    get: {{ operationId: getFile, responses: {{ "200": {{ description: ok }} }} }}
components:
  securitySchemes:
    key: {{ type: apiKey, in: header, name: X-API-Key }}
    sso: {{ type: oauth2, flows: {{}} }}
security: [ {{ key: [] }}, {{ sso: [] }} ]
"#
    )
}

#[tokio::test]
async fn an_openapi_description_becomes_a_routed_api() {
    let up = Upstream::start("pets");
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write_file(dir.path(), "petstore.yaml", &petstore(&up.url()));
    let run = run_tollgate(&["import-openapi", &spec], &[]);
    run.assert_code(0, "import-openapi");
    // The operation Tollgate cannot route is named on standard error, not imported.
    assert!(
        run.stderr.contains("GET /files/{name}.json left out"),
        "{}",
        run.stderr
    );
    // The OAuth 2 scheme is not something subscription keys stand for: said so.
    assert!(
        run.stderr.contains("security scheme `sso` (oauth2)"),
        "{}",
        run.stderr
    );
    let policy = write_file(dir.path(), "policy.yaml", &run.stdout);
    run_tollgate(&["validate", &policy], &[]).assert_code(0, "validate");
    for needle in [
        "id: swagger-petstore",
        "path: /swagger-petstore",
        "id: list-pets",
        "id: show-pet-by-id",
        "path: /pets/{pet_id}",
        "id: delete-pets-pet-id",
    ] {
        assert!(run.stdout.contains(needle), "{needle}:\n{}", run.stdout);
    }
    let gw = Gateway::start(&run.stdout);
    // The server's path (with its variable's default) is the base path upstream; the
    // generated API needs subscriptions, as every API does by default, and reads the key
    // where the spec's `apiKey` scheme puts it.
    let a = get(&gw.url("/swagger-petstore/pets/42")).await;
    a.assert_problem(401);
    let key = gw
        .admin()
        .create_subscription("importer", "api:swagger-petstore")
        .await;
    let c = client();
    let a = fetch(
        c.get(gw.url("/swagger-petstore/pets/42"))
            .header("X-API-Key", &key.primary),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/v1/pets/42");
    let a = fetch(
        c.put(gw.url("/swagger-petstore/pets/42"))
            .header("X-API-Key", &key.primary),
    )
    .await;
    a.assert_problem(405);
    let a = fetch(
        c.get(gw.url("/swagger-petstore/files/a.json"))
            .header("X-API-Key", &key.primary),
    )
    .await;
    a.assert_problem(404);
}

/// Swagger 2.0 with `--api-only`: the API object goes into a running gateway with
/// `PUT /apis/{id}`; `--id`, `--path` and `--upstream` win over the spec.
#[tokio::test]
async fn swagger_2_api_only_goes_in_with_put() {
    let up = Upstream::start("legacy");
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write_file(
        dir.path(),
        "legacy.json",
        r#"{"swagger": "2.0", "info": {"title": "Legacy", "version": "1"},
            "host": "legacy.invalid", "basePath": "/api", "schemes": ["https"],
            "paths": {"/orders/{id}": {"get": {"operationId": "getOrder", "responses": {}}}}}"#,
    );
    let run = run_tollgate(
        &[
            "import-openapi",
            &spec,
            "--api-only",
            "--id",
            "orders",
            "--path",
            "/orders-api",
            "--upstream",
            &format!("{}/api", up.url()),
        ],
        &[],
    );
    run.assert_code(0, "import-openapi --api-only");
    assert!(!run.stdout.contains("version:"), "{}", run.stdout);
    let gw = Gateway::start("version: 1\n");
    let admin = gw.admin();
    let put = admin.put_yaml("/apis/orders", &run.stdout).await;
    assert!(put.status == 200 || put.status == 201, "{}", put.text());
    let key = admin.create_subscription("o", "api:orders").await;
    let a = fetch(
        client()
            .get(gw.url("/orders-api/orders/7"))
            .header("Ocp-Apim-Subscription-Key", &key.primary),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/api/orders/7");
}

#[tokio::test]
async fn what_is_not_openapi_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not = write_file(dir.path(), "not.yaml", "version: 1\napis: []\n");
    let run = run_tollgate(&["import-openapi", &not], &[]);
    run.assert_code(1, "not OpenAPI");
    assert!(
        run.stderr.contains("not an OpenAPI description"),
        "{}",
        run.stderr
    );
    // A relative server URL and no --upstream: the upstream must be given.
    let relative = write_file(dir.path(),
        "relative.yaml",
        "openapi: 3.1.0\ninfo: { title: R, version: '1' }\nservers: [ { url: /v1 } ]\npaths: { /a: { get: { responses: {} } } }\n",
    );
    let run = run_tollgate(&["import-openapi", &relative], &[]);
    run.assert_code(1, "relative server");
    assert!(run.stderr.contains("--upstream"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// `--validate-requests`: JSON request bodies get `validate-content` with the spec's
/// schemas (references carried along, OpenAPI 3.0's `nullable` and boolean
/// `exclusiveMinimum` understood, `readOnly` properties not required), and a running
/// gateway refuses bodies that do not match; bodies it cannot validate are named.
#[tokio::test]
async fn request_schemas_become_validate_content() {
    let up = Upstream::start("pets");
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write_file(
        dir.path(),
        "pets.yaml",
        r##"openapi: 3.0.3
info: { title: Pets, version: 1.0.0 }
paths:
  /pets:
    parameters:
      - { name: X-Tenant, in: header, required: true, schema: { type: string } }
    get:
      operationId: listPets
      parameters:
        - $ref: "#/components/parameters/Limit"
        - { name: filter, in: query, style: deepObject, schema: { type: object } }
        - { name: Accept, in: header, required: true, schema: { type: string } }
      responses: { "200": { description: ok } }
    post:
      operationId: createPet
      requestBody: { $ref: "#/components/requestBodies/PetBody" }
      responses: { "201": { description: ok } }
  /pets/{id}:
    parameters:
      - { name: id, in: path, required: true, schema: { type: integer, minimum: 1 } }
    put:
      operationId: replacePet
      requestBody:
        content:
          application/json: { schema: { $ref: "#/components/schemas/Pet" } }
          application/xml: { schema: { $ref: "#/components/schemas/Pet" } }
      responses: { "200": { description: ok } }
    patch:
      operationId: patchPet
      requestBody:
        content:
          application/merge-patch+json: { schema: { $ref: "#/components/schemas/Missing" } }
      responses: { "200": { description: ok } }
components:
  parameters:
    Limit: { name: limit, in: query, schema: { $ref: "#/components/schemas/Limit" } }
  requestBodies:
    PetBody:
      required: true
      content:
        application/json: { schema: { $ref: "#/components/schemas/Pet" } }
  schemas:
    Pet:
      type: object
      required: [id, name]
      properties:
        id: { type: integer, format: int64, readOnly: true }
        name: { type: string, minLength: 1 }
        tag: { type: string, nullable: true }
        age: { type: integer, minimum: 0, exclusiveMinimum: true }
        owner: { $ref: "#/components/schemas/Owner" }
        default: { type: boolean }
    Limit: { type: integer, maximum: 50 }
    Owner:
      type: object
      required: [email]
      properties:
        email: { type: string, format: email }
"##,
    );
    let run = run_tollgate(
        &[
            "import-openapi",
            &spec,
            "--validate-requests",
            "--upstream",
            &up.url(),
        ],
        &[],
    );
    run.assert_code(0, "import-openapi --validate-requests");
    for wanted in [
        "GET /pets: parameter `filter` (style deepObject) is not validated",
        "PUT /pets/{id}: request body not validated: it also takes application/xml",
        "PATCH /pets/{id}: request body not validated: `$ref: #/components/schemas/Missing` names no schema",
    ] {
        assert!(run.stderr.contains(wanted), "{wanted}:\n{}", run.stderr);
    }
    assert_eq!(
        run.stdout.matches("validate-content").count(),
        1,
        "{}",
        run.stdout
    );
    let gw = Gateway::start(&run.stdout);
    let key = gw.admin().create_subscription("p", "api:pets").await;
    let post = |body: &'static str| {
        let c = client()
            .post(gw.url("/pets/pets"))
            .header("Ocp-Apim-Subscription-Key", &key.primary)
            .header("X-Tenant", "t")
            .header("content-type", "application/json")
            .body(body);
        async move { fetch(c).await }
    };
    // Parameters: the path item's and the operation's, a referenced parameter and schema
    // read as an integer. `Accept` is not a parameter OpenAPI lets a spec define.
    let get = |query: &'static str, tenant: bool| {
        let mut c = client()
            .get(gw.url(&format!("/pets/pets?{query}")))
            .header("Ocp-Apim-Subscription-Key", &key.primary);
        if tenant {
            c = c.header("X-Tenant", "t");
        }
        async move { fetch(c).await }
    };
    let a = get("limit=50", true).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = up.count();
    for (query, tenant, name) in [
        ("limit=51", true, "limit"),
        ("limit=ten", true, "limit"),
        ("limit=5", false, "x-tenant"),
    ] {
        let p = get(query, tenant).await.assert_problem(400);
        assert_eq!(p["type"], "urn:tollgate:problem:invalid-parameters", "{p}");
        assert_eq!(p["errors"][0]["name"], name, "{query}: {p}");
    }
    assert_eq!(up.count(), seen);
    up.clear();
    // `id` is read-only: not required of a request; `tag` may be null.
    let a = post(
        r#"{"name":"Rex","tag":null,"age":1,"owner":{"email":"ada@example.com"},"default":true}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 1);
    // The path parameter of the other operations.
    let a = fetch(
        client()
            .put(gw.url("/pets/pets/0"))
            .header("Ocp-Apim-Subscription-Key", &key.primary)
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(a.assert_problem(400)["errors"][0]["name"], "id");
    for (body, pointer) in [
        (r#"{"name":"Rex","age":0}"#, "/age"),
        (r#"{"name":"Rex","owner":{}}"#, "/owner"),
        (r#"{"name":"Rex","default":"yes"}"#, "/default"),
        (r#"{"tag":"x"}"#, ""),
    ] {
        let p = post(body).await.assert_problem(400);
        assert_eq!(p["errors"][0]["pointer"], pointer, "{body}: {p}");
    }
    assert_eq!(up.count(), 1, "a refused body reached the upstream");
    // Not validated: the operation that also takes XML.
    let a = fetch(
        client()
            .put(gw.url("/pets/pets/7"))
            .header("Ocp-Apim-Subscription-Key", &key.primary)
            .header("content-type", "application/json")
            .body(r#"{"name":""}"#),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
}
